# dialwatch: build a wheel, install it into a slim Debian runtime, run as a non-root user.
# The base is Debian's own python3 (3.11), so the image needs no other registry.
# Behind a TLS-intercepting proxy, give pip its CA for the build only (never stored in a
# layer): docker build --secret id=ca,src=/path/to/ca-bundle.pem .
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dialwatch ./dialwatch
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dialwatch \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin dialwatch \
    && mkdir -p /data /config \
    && chown dialwatch /data
COPY --from=build /wheels /wheels
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/dialwatch \
    && /opt/dialwatch/bin/pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels
ENV PATH=/opt/dialwatch/bin:$PATH \
    DIALWATCH_STATE=/data/dialwatch.db \
    DIALWATCH_RULES=/config/rules.yaml \
    DIALWATCH_LISTEN=0.0.0.0:9090 \
    DIALWATCH_LOG_FORMAT=json
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["dialwatch", "healthcheck"]
ENTRYPOINT ["dialwatch"]
CMD ["run"]
