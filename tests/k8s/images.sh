#!/usr/bin/env bash
# Builds crashfleet/game-node:dev and crashfleet/crashfleet-operator:dev from our Dockerfiles with
# buildah and loads them into the real node's containerd (tests/k8s/cluster.sh). No registry can
# be reached, so the runtime base is a stand-in made from this machine's Debian packages, and the
# binaries are the ones cargo built on the host (the Dockerfiles' `prebuilt` target): the image is
# the users' runtime stage with our binary in it. See docs/TESTING.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE_DIR=${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}
NAME=${CRASHFLEET_K8S_NAME:-crashfleet}
# The binaries put into the images. Debug by default: `cargo test` builds them anyway (the
# workspace's dev profile optimises every dependency), so the images cost no second compile.
PROFILE=${CRASHFLEET_IMAGE_PROFILE:-debug}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TAG=${CRASHFLEET_IMAGE_TAG:-dev}
IMAGES_DIR=$CACHE_DIR/images
# 0: use the binaries as they are (tests/run.sh has just built them with `cargo test --no-run`,
# whose feature set a plain `cargo build -p` would not match, costing a second compile).
CARGO_BUILD=${CRASHFLEET_IMAGES_CARGO_BUILD:-1}
CONTAINERD_SOCK=$CACHE_DIR/clusters/$NAME/real-0/containerd/containerd.sock

usage() {
  cat <<EOF
Usage: tests/k8s/images.sh [build | import | --help]

  build   cargo build the binaries ($PROFILE), build the runtime stand-in if its inputs changed,
          build crashfleet/game-node:$TAG and crashfleet/crashfleet-operator:$TAG with buildah
  import  (the default: build, then import) load both images into the real node's containerd
          of cluster '$NAME' (ctr -n k8s.io images import); skipped with a note when it does not run

Environment:
  CRASHFLEET_K8S_NAME        the cluster whose real node gets the images (default crashfleet)
  CRASHFLEET_IMAGE_PROFILE   debug (default; what cargo test builds) or release
  CRASHFLEET_IMAGE_TAG       image tag (default dev)
  CRASHFLEET_IMAGES_CARGO_BUILD  1 (default): cargo build the two binaries first; 0: use them as built
  CRASHFLEET_CACHE_DIR       cache root: buildah storage and image archives under it
EOF
}

log() { printf 'images.sh: %s\n' "$*" >&2; }
die() {
  printf 'images.sh: error: %s\n' "$*" >&2
  exit 1
}

# One storage for every image built here (the pause image of cluster.sh too); vfs needs no
# overlay-on-overlay support and no fuse.
buildah_() {
  buildah --root "$CACHE_DIR/buildah/root" --runroot "$CACHE_DIR/buildah/runroot" --storage-driver vfs "$@"
}

image_exists() { buildah_ images -q "$1" >/dev/null 2>&1; }

# --- the runtime stand-in for gcr.io/distroless/cc-debian12:nonroot ---------------------------------

# What distroless/cc gives our binaries: glibc, libgcc_s, CA certificates, /etc/passwd with
# nonroot (65532), a writable /tmp, no shell. Taken from this machine's Debian packages.
RUNTIME_PACKAGES=(libc6 libgcc-s1 libssl3 netbase tzdata)

# The stand-in's tag: a hash of everything it is made from, so it is rebuilt only when a package
# version, the CA bundle or this recipe changes.
runtime_key() {
  {
    dpkg-query -W -f '${Package} ${Version}\n' "${RUNTIME_PACKAGES[@]}"
    sha256sum /etc/ssl/certs/ca-certificates.crt
    declare -f make_runtime_root
  } | sha256sum | cut -c1-16
}

make_runtime_root() {
  local root=$1 p f
  mkdir -p "$root/usr"
  # Debian's merged /usr: /lib, /lib64, /bin, /sbin are links into /usr, as on the host (the
  # binaries' interpreter is /lib64/ld-linux-x86-64.so.2).
  for p in bin sbin lib lib64; do
    if [ -L "/$p" ]; then
      ln -s "$(readlink "/$p")" "$root/$p"
      mkdir -p "$root/usr/$p"
    fi
  done
  for p in "${RUNTIME_PACKAGES[@]}"; do
    # Files and symlinks only; no documentation.
    # From / with relative paths: cp -a --parents copies the parents' attributes relative to the
    # working directory.
    dpkg -L "$p" | while read -r f; do
      case $f in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/man/* | /usr/share/locale/*) continue ;; esac
      [ -d "$f" ] && continue
      if [ -f "$f" ] || [ -L "$f" ]; then (cd / && cp -a --parents "${f#/}" "$root/"); fi
    done
  done
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<EOF
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
}

# Prints the stand-in's image name, building it first when its inputs changed.
runtime_image() {
  local key name
  key=$(runtime_key)
  name=localhost/crashfleet/runtime-base:$key
  if ! image_exists "$name"; then
    local t0=$SECONDS tmp c mnt
    tmp=$(mktemp -d "$IMAGES_DIR/.runtime.XXXXXX")
    make_runtime_root "$tmp/root"
    c=$(buildah_ from scratch)
    mnt=$(buildah_ mount "$c")
    cp -a "$tmp/root/." "$mnt/"
    buildah_ umount "$c" >/dev/null
    buildah_ config --user 65532:65532 --workingdir /home/nonroot \
      --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$c"
    buildah_ commit -q "$c" "$name" >/dev/null
    buildah_ rm "$c" >/dev/null
    rm -rf "$tmp"
    # Older stand-ins are of no further use.
    local old
    for old in $(buildah_ images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/crashfleet/runtime-base:' | grep -v ":$key\$" || true); do
      buildah_ rmi "$old" >/dev/null 2>&1 || true
    done
    log "runtime stand-in $name built in $((SECONDS - t0))s ($(du -sh "$CACHE_DIR/buildah/root" | cut -f1) buildah storage)"
  fi
  echo "$name"
}

# --- our images --------------------------------------------------------------------------------------

# build_image DOCKERFILE BINARY IMAGE: the Dockerfile's `prebuilt` target with our binary. The
# binary loses its debug sections (not its symbols): a third of the size, the same program.
build_image() {
  local dockerfile=$1 bin=$2 image=$3 runtime=$4 src ctx key archive
  src=$TARGET_DIR/$PROFILE/$bin
  [ -x "$src" ] || die "no $src; build it first: cargo build -p $bin --bin $bin (profile $PROFILE)"
  ctx=$(mktemp -d "$IMAGES_DIR/.ctx.XXXXXX")
  objcopy --strip-debug "$src" "$ctx/$bin"
  key=$( (
    sha256sum "$ctx/$bin" "$ROOT/$dockerfile" | cut -d' ' -f1
    echo "$runtime $image"
  ) | sha256sum | cut -c1-16)
  archive=$IMAGES_DIR/${bin}-$key.tar
  if [ -s "$archive" ] && image_exists "$image"; then
    log "$image unchanged ($archive)"
  else
    local t0=$SECONDS
    # --pull=never: nothing may come from a registry; the unused build stage (rust) is skipped.
    buildah_ bud -q --pull=never --layers=false --target prebuilt \
      --build-arg "RUNTIME_IMAGE=$runtime" --build-arg "BINARY=$bin" \
      -f "$ROOT/$dockerfile" -t "$image" "$ctx" >/dev/null
    rm -f "$IMAGES_DIR/${bin}"-*.tar
    buildah_ push -q "$image" "docker-archive:$archive.tmp:$image" >&2
    mv "$archive.tmp" "$archive"
    log "$image built in $((SECONDS - t0))s ($(du -h "$archive" | cut -f1))"
  fi
  rm -rf "$ctx"
  echo "$archive"
}

cargo_build() {
  local args=(build -p game-node --bin game-node -p crashfleet-operator --bin crashfleet-operator)
  [ "$PROFILE" = debug ] || args+=(--profile "$PROFILE")
  (cd "$ROOT" && nice -n 5 cargo "${args[@]}") >&2
}

cmd_build() {
  command -v buildah >/dev/null 2>&1 || die "buildah is missing: run tests/install-deps.sh"
  command -v objcopy >/dev/null 2>&1 || die "objcopy is missing (binutils)"
  mkdir -p "$IMAGES_DIR"
  [ "$CARGO_BUILD" = 0 ] || cargo_build
  local runtime
  runtime=$(runtime_image)
  ARCHIVES=()
  ARCHIVES+=("$(build_image game-node/Dockerfile game-node "docker.io/crashfleet/game-node:$TAG" "$runtime")")
  ARCHIVES+=("$(build_image operator/Dockerfile crashfleet-operator "docker.io/crashfleet/crashfleet-operator:$TAG" "$runtime")")
}

cmd_import() {
  if [ ! -S "$CONTAINERD_SOCK" ]; then
    log "cluster '$NAME' has no real node running ($CONTAINERD_SOCK); images built, not imported"
    return 0
  fi
  local a t0=$SECONDS
  for a in "${ARCHIVES[@]}"; do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$a" >/dev/null ||
      die "could not import $a into cluster '$NAME'"
  done
  log "imported crashfleet/game-node:$TAG and crashfleet/crashfleet-operator:$TAG into real-0 of cluster '$NAME' in $((SECONDS - t0))s"
}

case ${1:-import} in
  build) cmd_build ;;
  import)
    t_all=$SECONDS
    cmd_build
    cmd_import
    log "done in $((SECONDS - t_all))s"
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
