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
# What runs here is the Python interpreter and the virtualenv; nothing execs a shell (the
# chart's probes are HTTP, preStop is a `sleep` action, the test pod runs `python -c`).
# So the final stage drops, after creating the service user:
#   - pip, setuptools, wheel, ensurepip's bundled wheels, idle, pydoc;
#   - the package managers: apt, dpkg, debconf (their database /var/lib/dpkg stays, so
#     image scanners still inventory the OS packages; it lists the removed ones too);
#   - perl and every shell (bash, dash, sh): no later RUN is possible, so the shells go
#     last, and ENTRYPOINT/CMD are exec form. Debug with `kubectl debug` (an ephemeral
#     container with its own tools), not `kubectl exec ... sh`;
#   - setuid/setgid bits (su, passwd, mount, ...), useless to UID 10001 anyway.
# Bookworm images have a merged /usr (/bin -> usr/bin): the /usr paths cover /bin and /sbin.
RUN groupadd --gid 10001 adplatform \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
               --shell /usr/sbin/nologin adplatform \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && rm -rf /usr/local/lib/python3.11/site-packages/pip* \
              /usr/local/lib/python3.11/site-packages/setuptools* \
              /usr/local/lib/python3.11/site-packages/wheel* \
              /usr/local/lib/python3.11/ensurepip \
              /usr/local/bin/pip* /usr/local/bin/idle* /usr/local/bin/pydoc* \
    && rm -rf /usr/bin/apt /usr/bin/apt-* /usr/lib/apt /usr/lib/*/libapt-* \
              /etc/apt /var/lib/apt /var/cache/apt /var/log/apt \
              /usr/bin/dpkg /usr/bin/dpkg-* /usr/sbin/dpkg-* /usr/lib/dpkg /usr/libexec/dpkg \
              /usr/share/dpkg /etc/dpkg /usr/bin/update-alternatives /usr/sbin/start-stop-daemon \
              /usr/bin/debconf /usr/bin/debconf-* /usr/share/debconf /var/cache/debconf \
              /usr/bin/perl /usr/bin/perl5* /usr/lib/*/perl-base /usr/share/perl5 \
              /usr/bin/bash /usr/bin/rbash /usr/bin/bashbug /etc/bash.bashrc /etc/skel \
    && rm -f /usr/bin/dash /usr/bin/sh
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
