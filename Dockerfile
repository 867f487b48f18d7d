# everkit in a container: `docker run everkit:local module PyEvseManager --id ... --broker ...`
# (the subcommands of the `everkit` CLI). docker-compose.yml runs the SIL DC charger with it.
FROM python:3.11-slim

# non-root; /data belongs to it so named volumes mounted there (OCPP store, CSMS records)
# are writable
RUN useradd --create-home --uid 10001 everkit && mkdir /data && chown everkit /data

COPY . /tmp/everkit
RUN pip install --no-cache-dir /tmp/everkit && rm -rf /tmp/everkit

USER everkit
# what `everkit run` sets for its modules: bounded glibc arenas keep RSS flat under big
# payloads (docs/reliability.md)
ENV MALLOC_ARENA_MAX=2
WORKDIR /home/everkit
ENTRYPOINT ["everkit"]
CMD ["modules"]
