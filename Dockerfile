# Image for every process of the service (web, worker, release); compose.yaml and
# container platforms pick the process by its command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
RUN pip install --no-deps . && useradd --create-home --uid 10001 trustcard && chown -R trustcard /app
USER trustcard

EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "trustcard.wsgi:app"]
