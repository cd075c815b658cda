# syntax=docker/dockerfile:1
# One image for every adplatform service: `adplatform serve <service>` (campaigns,
# bidding, analytics); the chart also runs `adplatform migrate` from it.
#
# Stage 1 builds the project's wheel and the wheels of all its pinned dependencies
# (constraints.txt); stage 2 installs only those wheels into a virtualenv; the final
# stage copies the virtualenv onto a clean slim base, without pip, compilers or build
# files, and runs as the unprivileged UID 10001 on a read-only root filesystem.
#
# python:3.11.14-slim-bookworm, pinned by its multi-platform index digest.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# The project's wheel plus a wheel for every runtime dependency, at the pinned versions.
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=wheels /wheels /wheels
# Offline install from the wheelhouse only: what was built above is what runs. pip
# itself is not copied into the final image.
RUN python -m venv --without-pip /opt/adplatform \
    && pip --python /opt/adplatform/bin/python install --no-index --find-links /wheels /wheels/adplatform-*.whl \
    && python -m compileall -q /opt/adplatform/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="adplatform" \
      org.opencontainers.image.description="adplatform services: campaigns, bidding, analytics" \
      org.opencontainers.image.licenses="Apache-2.0"
# No package manager front-ends, pip or setuptools are needed at run time.
RUN rm -rf /usr/local/lib/python3.11/site-packages/pip* \
           /usr/local/lib/python3.11/site-packages/setuptools* \
           /usr/local/lib/python3.11/site-packages/wheel* \
           /usr/local/bin/pip* /usr/local/bin/idle* /usr/local/bin/pydoc* \
    && groupadd --gid 10001 adplatform \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
               --shell /usr/sbin/nologin adplatform
COPY --from=venv /opt/adplatform /opt/adplatform
ENV PATH=/opt/adplatform/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["adplatform", "serve"]
CMD ["campaigns"]
