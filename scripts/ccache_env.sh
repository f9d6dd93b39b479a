# Sourced by build.sh, sanitize.sh and fuzz.sh from the repository root: one ccache under $DS_HOME for
# every build dir, with paths under the clone hashed relative, so a fresh clone elsewhere (CI) hits it.
DS_HOME="${DS_HOME:-/opt/deltastore}"
export CCACHE_DIR="${CCACHE_DIR:-$DS_HOME/ccache}"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
