# The Plantbus hub image used by compose.yaml.
FROM python:3.11-slim-bookworm
WORKDIR /opt/plantbus
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY connectors ./connectors
COPY edge_cv ./edge_cv
COPY plugins ./plugins
COPY ui ./ui
RUN pip install --no-cache-dir .
WORKDIR /var/lib/plantbus
USER nobody
ENTRYPOINT []
CMD ["plantbus", "run"]
