# Docker services for the test suite (sourced by scripts/test.sh, not run): the Docker
# engine, the locally made base image, and two local OCI registries. Each function checks
# first and only installs or starts what is missing or down, so running it again is cheap.
# Expects REPO_ROOT, log/die/as_root/apt_install from scripts/_common.sh, and `set -euo pipefail`.
#
# Exports for the tests:
#   DOCKER_HOST                      the engine's socket (unset when the default one answers)
#   TEST_REGISTRY                    127.0.0.1:PORT of the plain registry
#   TEST_AUTH_REGISTRY               127.0.0.1:PORT of the registry that requires a login
#   TEST_AUTH_REGISTRY_USER / _PASSWORD   its one account (test-only credentials)
#
# Knobs: ORCHESTRATE_TEST_STATE_DIR (default /var/lib/orchestrate-test) holds the engine's data,
# the registries' storage and a cached root file system of the base image.

TEST_STATE_DIR="${ORCHESTRATE_TEST_STATE_DIR:-/var/lib/orchestrate-test}"
DOCKER_SOCKET="unix:///var/run/docker.sock"
# The default config's base image for Python 3.11 models (orchestrator/images: DEFAULT_BASE_IMAGE).
# It is a stand-in made with debootstrap: no public registry can be reached from CI.
BASE_IMAGE_TAGS=("python:3.11-slim" "python:3.11-slim-bookworm")
REGISTRY_PORT=15000
AUTH_REGISTRY_PORT=15001
AUTH_REGISTRY_USER=orchestrate-test
AUTH_REGISTRY_PASSWORD=registry-test-password

docker_answers() {
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start_dockerd() {
    local driver="$1" data_root="$TEST_STATE_DIR/docker" logfile="$TEST_STATE_DIR/dockerd.log" i
    as_root mkdir -p "$data_root"
    log "starting the Docker engine (storage driver $driver, data in $data_root, log $logfile)"
    # setsid + nohup: the engine outlives this script (later runs find it up).
    as_root setsid nohup dockerd --iptables=false --ip6tables=false --storage-driver="$driver" \
        --data-root "$data_root" -H "$DOCKER_SOCKET" --pidfile /var/run/orchestrate-dockerd.pid \
        >>"$logfile" 2>&1 </dev/null &
    for i in $(seq 1 60); do
        docker_answers && return 0
        # The engine exits at once when the storage driver does not work here.
        if ! as_root kill -0 "$(cat /var/run/orchestrate-dockerd.pid 2>/dev/null || echo 0)" 2>/dev/null && [ "$i" -gt 4 ]; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}

setup_docker() {
    if docker_answers; then
        log "Docker engine already up ($(docker version --format '{{.Server.Version}}'))"
        return
    fi
    command -v dockerd >/dev/null || { log "installing the Docker engine (apt-get install docker.io)"; apt_install docker.io; }
    command -v docker >/dev/null || die "the docker CLI is missing after installing docker.io"
    export DOCKER_HOST="$DOCKER_SOCKET"
    # overlay2 shares layers between images; vfs (copies every layer) works on any file system.
    if ! start_dockerd overlay2; then
        as_root pkill -F /var/run/orchestrate-dockerd.pid 2>/dev/null || true
        sleep 1
        start_dockerd vfs || die "the Docker engine did not start; see $TEST_STATE_DIR/dockerd.log"
    fi
    log "Docker engine ready ($(docker info --format '{{.Driver}}') storage)"
}

debian_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

setup_base_image() {
    if docker image inspect "${BASE_IMAGE_TAGS[0]}" >/dev/null 2>&1; then
        log "base image ${BASE_IMAGE_TAGS[0]} already present"
    else
        local tarball="$TEST_STATE_DIR/base-bookworm-python3.tar"
        if [ ! -s "$tarball" ]; then
            command -v debootstrap >/dev/null || apt_install debootstrap
            local rootfs mirror
            mirror="$(debian_mirror)"
            rootfs="$(as_root mktemp -d "$TEST_STATE_DIR/rootfs.XXXXXX")"
            log "making the base image's root file system with debootstrap from $mirror (about a minute)"
            as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
                bookworm "$rootfs" "$mirror" >"$TEST_STATE_DIR/debootstrap.log" 2>&1 \
                || die "debootstrap failed; see $TEST_STATE_DIR/debootstrap.log"
            # Documentation, locales and apt's caches: nothing in a serving image reads them.
            as_root sh -c "cd '$rootfs' && rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* \
                usr/share/locale/* var/cache/apt/* var/lib/apt/lists/* var/log/*"
            as_root sh -c "tar -C '$rootfs' -c . >'$tarball.tmp' && mv '$tarball.tmp' '$tarball'"
            as_root rm -rf "$rootfs"
        fi
        log "importing the base image as ${BASE_IMAGE_TAGS[*]}"
        docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' "$tarball" "${BASE_IMAGE_TAGS[0]}" >/dev/null
    fi
    local tag
    for tag in "${BASE_IMAGE_TAGS[@]:1}"; do
        docker tag "${BASE_IMAGE_TAGS[0]}" "$tag"
    done
}

registry_answers() {
    # /v2/ answers 200 (open) or 401 (login required) once the registry is up.
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/" 2>/dev/null || true)"
    [ "$code" = "200" ] || [ "$code" = "401" ]
}

start_registry() {
    local name="$1" port="$2" auth="$3" dir="$TEST_STATE_DIR/registry-$1" i
    if registry_answers "$port"; then
        log "registry $name already up on 127.0.0.1:$port"
        return
    fi
    as_root mkdir -p "$dir/storage"
    {
        printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$dir/storage"
        printf '  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' "$port"
        if [ "$auth" = "htpasswd" ]; then
            printf 'auth:\n  htpasswd:\n    realm: orchestrate-test\n    path: %s\n' "$dir/htpasswd"
        fi
    } | as_root tee "$dir/config.yml" >/dev/null
    if [ "$auth" = "htpasswd" ]; then
        command -v htpasswd >/dev/null || apt_install apache2-utils
        htpasswd -Bbn "$AUTH_REGISTRY_USER" "$AUTH_REGISTRY_PASSWORD" | as_root tee "$dir/htpasswd" >/dev/null
    fi
    log "starting registry $name on 127.0.0.1:$port (log $dir/registry.log)"
    as_root setsid nohup docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
    for i in $(seq 1 40); do
        registry_answers "$port" && return
        sleep 0.25
    done
    die "registry $name did not answer on 127.0.0.1:$port; see $dir/registry.log"
}

setup_registries() {
    command -v docker-registry >/dev/null || apt_install docker-registry
    command -v curl >/dev/null || apt_install curl
    start_registry plain "$REGISTRY_PORT" none
    start_registry auth "$AUTH_REGISTRY_PORT" htpasswd
    export TEST_REGISTRY="127.0.0.1:$REGISTRY_PORT"
    export TEST_AUTH_REGISTRY="127.0.0.1:$AUTH_REGISTRY_PORT"
    export TEST_AUTH_REGISTRY_USER="$AUTH_REGISTRY_USER"
    export TEST_AUTH_REGISTRY_PASSWORD="$AUTH_REGISTRY_PASSWORD"
}

setup_docker_services() {
    as_root mkdir -p "$TEST_STATE_DIR"
    setup_docker
    setup_base_image
    setup_registries
}
