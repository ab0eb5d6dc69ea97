FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY databite_stream ./databite_stream
RUN pip install --no-cache-dir -c constraints.txt '.[rocksdb]'
ENV DATABITE_DATA_DIR=/data
USER nobody
CMD ["databite-stream", "worker"]
