# Redis from Debian's redis-server package, for the Compose `redis` profile (shared idempotency and rate-limit
# state when several gateway replicas run). Official redis images work as well where they can be pulled.
ARG DEBIAN_IMAGE=debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /var/lib/redis \
 && chown redis:redis /var/lib/redis
USER redis
WORKDIR /var/lib/redis
VOLUME /var/lib/redis
EXPOSE 6379
# Reachable only on the Compose network (not published); appendonly keeps the state across restarts.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/var/lib/redis", "--appendonly", "yes", "--save", ""]
