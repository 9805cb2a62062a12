# HAProxy from Debian's haproxy package (2.6 on bookworm), the load balancer of docker-compose.replicas.yml:
# one published port in front of every gateway replica, health-checked on /readyz (docker/haproxy.cfg).
ARG DEBIAN_IMAGE=debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY haproxy.cfg /etc/haproxy/haproxy.cfg
# Validated at build time: a broken configuration fails the build, not the deployment.
RUN haproxy -c -f /etc/haproxy/haproxy.cfg
# The package's own unprivileged user; the configuration binds port 3000 only, needs no chroot and writes no file.
USER haproxy
EXPOSE 3000
# Up when HAProxy takes connections (whether replicas are up is HAProxy's own business: its checks, its logs).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000"]
# SIGUSR1 is HAProxy's soft stop: it stops listening, lets the calls in flight finish (at most `hard-stop-after`,
# below Compose's stop_grace_period) and exits. SIGTERM would cut them.
STOPSIGNAL SIGUSR1
# HAProxy handles its signals itself and starts no child processes: it can be PID 1 without an init.
CMD ["haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
