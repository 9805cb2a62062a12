# Redis from Debian's redis-server package, for docker-compose.replicas.yml (idempotency keys, rate limits and answer
# nonces shared by the gateway replicas). Official redis images work as well where they can be pulled.
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
# Reachable only on the Compose network (not published); appendonly keeps the state across restarts, and noeviction
# (Redis's default, spelt out) refuses writes rather than forget a key when memory is full: a forgotten
# Idempotency-Key is a call that can run twice.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/var/lib/redis", "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"]
