#!/usr/bin/env bash
# The whole test suite on a fresh machine: what the README's test command runs, and CI.
#
# The multi-process tests (tests/tests/mpi.rs) and the `mpi` feature they build need
# OpenMPI and libclang (for the MPI bindings). Where they are missing this installs them
# through apt as root, or says what to install; then it runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

have_mpi() {
    command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1
}
have_libclang() {
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' \
        || ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1
}

if ! have_mpi || ! have_libclang; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing OpenMPI and libclang (apt-get install openmpi-bin libopenmpi-dev libclang-dev)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev libclang-dev >/dev/null
    else
        echo "tests/run.sh: the tests need OpenMPI (mpirun, mpicc) and libclang, which this machine lacks." >&2
        echo "  Debian/Ubuntu: sudo apt-get install openmpi-bin libopenmpi-dev libclang-dev" >&2
        echo "  Fedora: sudo dnf install openmpi-devel clang-devel (then: module load mpi/openmpi-x86_64)" >&2
        echo "  macOS: brew install open-mpi llvm" >&2
        exit 1
    fi
fi

# OpenMPI refuses to start as root unless told; the tests run mpirun themselves.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec cargo test --workspace "$@"
