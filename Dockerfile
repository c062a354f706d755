# dialwatch: build a wheel, install it into a slim runtime as a non-root user.
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dialwatch ./dialwatch
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir build \
    && /opt/build/bin/python -m build --wheel --outdir /wheels .

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/dialwatch \
    && /opt/dialwatch/bin/pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin dialwatch \
    && mkdir -p /data /config \
    && chown dialwatch /data
ENV PATH=/opt/dialwatch/bin:$PATH \
    DIALWATCH_STATE=/data/dialwatch.db \
    DIALWATCH_RULES=/config/rules.yaml \
    DIALWATCH_LOG_FORMAT=json
USER dialwatch
WORKDIR /data
VOLUME /data
ENTRYPOINT ["dialwatch"]
CMD ["run"]
