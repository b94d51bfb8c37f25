# syntax=docker/dockerfile:1
#
# One connector with its configuration baked in, on top of the danube-host
# image (docker/Dockerfile). Any connector component works, from this
# repository or built elsewhere:
#
#   docker build -f docker/connector.Dockerfile \
#       --build-arg MODULE=target/wasm32-wasip2/release/mqtt_source.wasm \
#       --build-arg CONFIG=docker/config/mqtt-source.toml \
#       -t my-org/mqtt-bridge .
#
# Secrets stay out of the image: pass them as environment variables at run
# time (MQTT_PASSWORD, POSTGRES_PASSWORD, ...), which override the file's keys.

ARG HOST_IMAGE=danube-connect/danube-host:latest
FROM ${HOST_IMAGE}
ARG MODULE
ARG CONFIG
COPY ${MODULE} /opt/danube/connector.wasm
COPY ${CONFIG} /etc/danube/connector.toml
CMD ["--module", "/opt/danube/connector.wasm", "--config", "/etc/danube/connector.toml"]
