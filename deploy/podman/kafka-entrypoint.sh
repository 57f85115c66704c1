#!/bin/bash
# Starts one KRaft broker from the environment, the way the official apache/kafka image
# does: every KAFKA_FOO_BAR variable becomes foo.bar in server.properties (___ stands for
# "-" and __ for "_"), CLUSTER_ID formats the storage on the first start.
set -euo pipefail
config=/opt/kafka/config/server.properties
: > "$config"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_JVM_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "$value" >> "$config"
done < <(env)
log_dirs=$(sed -n 's/^log\.dirs=//p' "$config")
log_dirs=${log_dirs:-/var/lib/kafka/data}
[[ -n "$(sed -n '/^log\.dirs=/p' "$config")" ]] || echo "log.dirs=$log_dirs" >> "$config"

java_opts=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties)
if [[ ! -f "${log_dirs%%,*}/meta.properties" ]]; then
  : "${CLUSTER_ID:?CLUSTER_ID is needed to format the storage on the first start}"
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" --config "$config"
fi
exec java "${java_opts[@]}" -cp '/opt/kafka/libs/*' kafka.Kafka "$config"
