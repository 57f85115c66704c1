#!/bin/bash
# The broker's healthcheck: sends Kafka's ApiVersions request (v0) to HOST:PORT and succeeds
# when the answer carries error code 0. The official image runs kafka-broker-api-versions.sh,
# which lives in kafka-tools, a jar the broker itself does not need (and the Maven fetch of
# connector/local/kafka.py does not bring).
set -euo pipefail
host=${1%:*} port=${1##*:}
exec 3<>"/dev/tcp/$host/$port"
# size 16 | api_key 18 | api_version 0 | correlation_id 7 | client_id "probe"
printf '\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x07\x00\x05probe' >&3
# size (4) | correlation_id (4) | error_code (2)
answer=$(timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n')
[[ "${answer:8:12}" == "000000070000" ]]
