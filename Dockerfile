# One image for every CareLoop process; docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CARELOOP_HOME=/var/lib/careloop

WORKDIR /app

# Dependencies get their own layer, read from pyproject.toml alone, so editing the code does not
# reinstall them. They come as binary wheels (psycopg2-binary, numpy, pgserver), so no compiler.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && useradd --system --create-home --home-dir /home/careloop careloop \
    && mkdir -p "$CARELOOP_HOME" \
    && chown careloop "$CARELOOP_HOME"

# Nothing here needs root; CARELOOP_HOME is only written when no database or broker URL is set.
USER careloop

EXPOSE 8000 8501
ENTRYPOINT ["careloop"]
CMD ["--help"]
