#!/usr/bin/env bash
# Container health check for danube-host, without curl in the image: asks one
# of its observability endpoints over plain HTTP and succeeds on status 200.
#
#   danube-healthcheck [PATH] [PORT]      defaults: /health 9090
#
# /health is 200 while healthy or degraded and 503 once the connector gave up;
# /ready is 200 once the connector is open, 503 before and while draining.
set -euo pipefail
path=${1:-/health}
port=${2:-9090}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
read -r -t 5 _ status _ <&3
[[ $status == 200 ]]
