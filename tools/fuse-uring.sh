# Sourced by tools/test.sh and the benchmarks: FUSE over io_uring on for the run where the
# kernel has it (the fuse module's enable_uring parameter, Linux 6.14+ with
# CONFIG_FUSE_IO_URING), and back as it was afterwards.
#
#   uring_on        turns it on; fails when this kernel has no such parameter
#   uring_restore   puts back what uring_on found (safe to call without it)
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_WAS=""
uring_on() {
  [ -w "$URING_PARAM" ] || return 1
  URING_WAS=$(cat "$URING_PARAM")
  echo 1 > "$URING_PARAM"
}
uring_restore() {
  if [ -n "$URING_WAS" ] && [ "$URING_WAS" != Y ]; then echo 0 > "$URING_PARAM"; fi
}
