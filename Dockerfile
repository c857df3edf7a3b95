# The zot image: engine workers and the simulator (CPU only).
FROM python:3.11-slim
WORKDIR /opt/zot
COPY pyproject.toml constraints.txt README.md ./
COPY engine engine
COPY operators operators
COPY optimizer optimizer
COPY simulators simulators
COPY configs configs
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT ["zot"]
