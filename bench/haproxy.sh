# Sourced by bench/reload.sh and bench/front_ab.sh: the one HAProxy setup both compare against.
# haproxy_config PORT WORKER_PORT... : HAProxy 2 threads, keep-alive both sides, upstream
# connections shared between clients (`http-reuse always`), round robin over the workers.
haproxy_config() {
  local port=$1 n=0 w
  shift
  cat <<CFG
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend bench
  bind 127.0.0.1:$port
  default_backend app
backend app
  balance roundrobin
CFG
  for w in "$@"; do echo "  server w$((n += 1)) 127.0.0.1:$w"; done
}
