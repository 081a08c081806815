# The Pantau image: one image for every service (`pantau db migrate`, `pantau ingest`,
# `pantau alerts`, `pantau api`, `pantau simulate`, `pantau devices`); the compose file picks
# the command.

# Build a wheel from the source tree, so the runtime image holds an ordinary (non-editable)
# install and no sources or build tools. The build context has no pantau/tools (.dockerignore),
# and requirements.lock holds no `tools` extra: `pantau up` and `pantau bench` say to install
# pantau[tools] instead.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# openssl: `pantau-pilot-ca` (scripts/pilot-ca.sh), run by the compose service `broker-init`
# to issue a pilot certificate for the broker's TLS listener.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl \
    && rm -rf /var/lib/apt/lists/*
COPY --chmod=0755 scripts/pilot-ca.sh /usr/local/bin/pantau-pilot-ca
# Exactly the versions of requirements.lock (`make lock` refreshes it from pyproject.toml), each
# checked against its hashes; then the project itself, which may bring nothing else.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels && pip check

# A fixed, unprivileged user. The spool and device-credentials directories exist in the image
# with the right owner, so that a named volume mounted over one is writable by that user.
RUN groupadd --system --gid 10001 pantau \
    && useradd --system --uid 10001 --gid pantau --home-dir /var/lib/pantau --create-home \
       --shell /usr/sbin/nologin pantau \
    && install -d -o pantau -g pantau /var/lib/pantau/spool /var/lib/pantau/devices
USER pantau
WORKDIR /var/lib/pantau

ENTRYPOINT ["pantau"]
CMD ["--help"]
