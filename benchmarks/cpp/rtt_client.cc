// A protocol-agnostic TCP load generator for benchmarks/server.py: the same
// client for every peer (rtml, an echo server, redis-server), so a difference
// between peers is the server's, not the client's.
//
// It knows one request (its bytes, from a file or stdin) and the exact byte
// length of its response; optionally the expected response bytes, which it
// compares in full for the first --check-full responses of each connection
// and by their first --check-prefix bytes for every later one (a server whose
// answer drifts over time, e.g. a sliding window, can still be checked by its
// header). A mismatch, an early close or a stall (no reply for --stall-ms,
// default 5000) ends the run with an "error" JSON line and exit code 1, so an
// error frame never passes as a score.
//
//   rtt:  one connection, closed loop: send, read exactly response-len bytes,
//         time the round trip (CLOCK_MONOTONIC); --warmup untimed then --count
//         timed; prints p50/p90/p99/p999/mean/min/max in microseconds.
//   pipe: --conns connections from one thread (poll), each keeping --depth
//         requests in flight (one more sent per response read) for
//         --warmup-seconds, then counted for --seconds; prints responses/s.
//
// One JSON line on stdout. Single-threaded by design: on a 2-core machine the
// server gets the other core. POSIX only, C++17, no dependencies. Built by
// benchmarks/server.py with `c++ -O2 -std=c++17` (not by CMake).
//
//   rtt_client --port P --request FILE|- --response-len N [--expect FILE]
//              [--host 127.0.0.1] [--check-full N] [--check-prefix K] [--stall-ms MS]
//              rtt [--count N] [--warmup N]
//              pipe [--conns C] [--depth D] [--seconds S] [--warmup-seconds W]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Bytes = std::vector<uint8_t>;

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string mode;
  Bytes request;
  size_t response_len = 0;
  Bytes expect;  // empty: responses are counted, not compared
  long check_full = -1;  // responses per connection compared in full; -1 = all
  size_t check_prefix = 0;  // bytes compared in every later response; 0 = all
  long count = 20000;
  long warmup = 2000;
  int conns = 1;
  int depth = 32;
  double seconds = 3.0;
  double warmup_seconds = 0.5;
  int stall_ms = 5000;  // no reply for this long: the run fails
};

// A run-ending failure: printed as {"error": ...} with exit code 1.
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  }
  return out;
}

Bytes ReadAll(const std::string& path) {
  if (path == "-") {
    std::cin >> std::noskipws;
    return Bytes(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument("cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// One connection's receive side: assembles each response, then checks it.
class ResponseReader {
 public:
  ResponseReader(const Options& opt, int conn) : opt_(opt), conn_(conn), cur_(opt.response_len) {}

  // Consumes n received bytes; returns how many responses they completed.
  long Feed(const uint8_t* p, size_t n) {
    long done = 0;
    while (n > 0) {
      const size_t take = std::min(n, cur_.size() - pos_);
      std::memcpy(cur_.data() + pos_, p, take);
      pos_ += take;
      p += take;
      n -= take;
      if (pos_ == cur_.size()) {
        Check();
        pos_ = 0;
        ++responses_;
        ++done;
      }
    }
    return done;
  }

  std::string Partial() const {
    return "response " + std::to_string(responses_) + " on connection " + std::to_string(conn_) +
           ": " + std::to_string(pos_) + " of " + std::to_string(cur_.size()) +
           " bytes received: " + Hex(cur_.data(), pos_);
  }

  long full_checks() const { return full_checks_; }

 private:
  void Check() {
    if (opt_.expect.empty()) return;
    const bool full = opt_.check_full < 0 || responses_ < opt_.check_full;
    size_t n = cur_.size();
    if (!full && opt_.check_prefix > 0) n = std::min(n, opt_.check_prefix);
    full_checks_ += n == cur_.size() ? 1 : 0;
    if (std::memcmp(cur_.data(), opt_.expect.data(), n) == 0) return;
    size_t at = 0;
    while (cur_[at] == opt_.expect[at]) ++at;
    throw RunError("response " + std::to_string(responses_) + " on connection " +
                   std::to_string(conn_) + " differs from the expected at byte " +
                   std::to_string(at) + ": got " + Hex(cur_.data(), cur_.size()) + ", want " +
                   Hex(opt_.expect.data(), opt_.expect.size()));
  }

  const Options& opt_;
  int conn_;
  Bytes cur_;
  size_t pos_ = 0;
  long responses_ = 0;
  long full_checks_ = 0;
};

int Connect(const Options& opt) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw RunError(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(opt.port));
  if (inet_pton(AF_INET, opt.host.c_str(), &addr.sin_addr) != 1) {
    throw RunError("not an IPv4 address: " + opt.host);
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw RunError("connect to " + opt.host + ":" + std::to_string(opt.port) + ": " +
                   std::strerror(errno));
  }
  return fd;
}

void WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw RunError(std::string("write: ") + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Blocks until `want` responses have arrived. The socket has SO_RCVTIMEO set, so
// a stall ends the run instead of hanging it, with no poll call per round trip.
void ReadResponses(int fd, ResponseReader& reader, long want, uint8_t* buf, size_t cap) {
  while (want > 0) {
    const ssize_t r = read(fd, buf, cap);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      throw RunError("no reply for --stall-ms; " + reader.Partial());
    }
    if (r < 0) throw RunError(std::string("read: ") + std::strerror(errno));
    if (r == 0) throw RunError("server closed the connection; " + reader.Partial());
    want -= reader.Feed(buf, static_cast<size_t>(r));
  }
  if (want < 0) throw RunError("more bytes than one response per request arrived");
}

double Percentile(const std::vector<double>& sorted, double q) {
  const double rank = std::ceil(q * static_cast<double>(sorted.size()));
  const size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

void RunRtt(const Options& opt) {
  const int fd = Connect(opt);
  const timeval stall{opt.stall_ms / 1000, (opt.stall_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &stall, sizeof stall);
  ResponseReader reader(opt, 0);
  Bytes buf(std::max<size_t>(opt.response_len, 4096));
  std::vector<double> us;
  us.reserve(static_cast<size_t>(opt.count));
  for (long i = 0; i < opt.warmup + opt.count; ++i) {
    const double t0 = Now();
    WriteAll(fd, opt.request.data(), opt.request.size());
    ReadResponses(fd, reader, 1, buf.data(), buf.size());
    if (i >= opt.warmup) us.push_back((Now() - t0) * 1e6);
  }
  close(fd);
  double sum = 0;
  for (double u : us) sum += u;
  std::sort(us.begin(), us.end());
  std::printf(
      "{\"mode\": \"rtt\", \"count\": %zu, \"p50_us\": %.3f, \"p90_us\": %.3f, "
      "\"p99_us\": %.3f, \"p999_us\": %.3f, \"mean_us\": %.3f, \"min_us\": %.3f, "
      "\"max_us\": %.3f, \"checked_full\": %ld}\n",
      us.size(), Percentile(us, 0.5), Percentile(us, 0.9), Percentile(us, 0.99),
      Percentile(us, 0.999), sum / static_cast<double>(us.size()), us.front(), us.back(),
      reader.full_checks());
}

// One pipelined connection: requests are identical, so what is queued is a
// count of bytes of an endless repetition of the request, sent from a buffer of
// depth + 1 copies starting at the offset the stream has reached.
struct PipeConn {
  int fd = -1;
  size_t unsent = 0;  // queued bytes not yet accepted by the socket
  size_t offset = 0;  // position in the request of the next byte to send
  long in_flight = 0;
};

void Flush(PipeConn& c, const Bytes& copies, size_t req_len) {
  while (c.unsent > 0) {
    const ssize_t w = send(c.fd, copies.data() + c.offset, c.unsent, MSG_DONTWAIT);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw RunError(std::string("send: ") + std::strerror(errno));
    c.unsent -= static_cast<size_t>(w);
    c.offset = (c.offset + static_cast<size_t>(w)) % req_len;
  }
}

void RunPipe(const Options& opt) {
  const size_t req_len = opt.request.size();
  Bytes copies;
  for (int i = 0; i <= opt.depth; ++i) {
    copies.insert(copies.end(), opt.request.begin(), opt.request.end());
  }
  std::vector<PipeConn> conns(static_cast<size_t>(opt.conns));
  std::vector<ResponseReader> readers;
  std::vector<pollfd> pfds(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) {
    conns[i].fd = Connect(opt);
    readers.emplace_back(opt, static_cast<int>(i));
    conns[i].unsent = req_len * static_cast<size_t>(opt.depth);
    conns[i].in_flight = opt.depth;
    Flush(conns[i], copies, req_len);
  }
  Bytes buf(1 << 16);
  const double start = Now() + opt.warmup_seconds;
  const double stop = start + opt.seconds;
  double measured_from = 0;
  long counted = 0;
  long in_flight = opt.depth * opt.conns;
  bool sending = true;
  while (in_flight > 0) {
    for (size_t i = 0; i < conns.size(); ++i) {
      pfds[i] = {conns[i].fd, static_cast<short>(POLLIN | (conns[i].unsent ? POLLOUT : 0)), 0};
    }
    const int ready = poll(pfds.data(), pfds.size(), opt.stall_ms);
    if (ready == 0) throw RunError("no reply for --stall-ms; " + readers[0].Partial());
    const double now = Now();
    if (sending && now >= stop) sending = false;
    for (size_t i = 0; i < conns.size(); ++i) {
      PipeConn& c = conns[i];
      if (pfds[i].revents & (POLLIN | POLLERR | POLLHUP)) {
        const ssize_t r = recv(c.fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r < 0) throw RunError(std::string("recv: ") + std::strerror(errno));
        if (r == 0) throw RunError("server closed the connection; " + readers[i].Partial());
        const long done = readers[i].Feed(buf.data(), static_cast<size_t>(r));
        if (done > c.in_flight) throw RunError("more responses than requests arrived");
        if (now >= start && measured_from == 0) measured_from = now;
        if (measured_from > 0 && now < stop) counted += done;
        if (sending) {
          c.unsent += req_len * static_cast<size_t>(done);
        } else {
          c.in_flight -= done;
          in_flight -= done;
        }
      }
      Flush(c, copies, req_len);
    }
  }
  for (PipeConn& c : conns) close(c.fd);
  long full = 0;
  for (const ResponseReader& r : readers) full += r.full_checks();
  const double secs = stop - std::max(measured_from, start);
  std::printf(
      "{\"mode\": \"pipe\", \"conns\": %d, \"depth\": %d, \"responses\": %ld, "
      "\"seconds\": %.3f, \"rps\": %.1f, \"checked_full\": %ld}\n",
      opt.conns, opt.depth, counted, secs, static_cast<double>(counted) / secs, full);
}

Options Parse(int argc, char** argv) {
  Options opt;
  std::string request_path, expect_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "rtt" || a == "pipe") {
      opt.mode = a;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + a);
    const std::string v = argv[++i];
    if (a == "--host") opt.host = v;
    else if (a == "--port") opt.port = std::stoi(v);
    else if (a == "--request") request_path = v;
    else if (a == "--response-len") opt.response_len = std::stoul(v);
    else if (a == "--expect") expect_path = v;
    else if (a == "--check-full") opt.check_full = std::stol(v);
    else if (a == "--check-prefix") opt.check_prefix = std::stoul(v);
    else if (a == "--count") opt.count = std::stol(v);
    else if (a == "--warmup") opt.warmup = std::stol(v);
    else if (a == "--conns") opt.conns = std::stoi(v);
    else if (a == "--depth") opt.depth = std::stoi(v);
    else if (a == "--seconds") opt.seconds = std::stod(v);
    else if (a == "--warmup-seconds") opt.warmup_seconds = std::stod(v);
    else if (a == "--stall-ms") opt.stall_ms = std::stoi(v);
    else throw std::invalid_argument("unknown option " + a);
  }
  if (opt.mode.empty()) throw std::invalid_argument("give a mode: rtt or pipe");
  if (opt.port <= 0 || request_path.empty() || opt.response_len == 0) {
    throw std::invalid_argument("--port, --request and --response-len are required");
  }
  if (opt.count < 1 || opt.warmup < 0 || opt.conns < 1 || opt.depth < 1 || opt.seconds <= 0 ||
      opt.stall_ms < 1) {
    throw std::invalid_argument(
        "--count, --conns, --depth, --seconds and --stall-ms must be positive");
  }
  opt.request = ReadAll(request_path);
  if (opt.request.empty()) throw std::invalid_argument("the request is empty");
  if (!expect_path.empty()) {
    opt.expect = ReadAll(expect_path);
    if (opt.expect.size() != opt.response_len) {
      throw std::invalid_argument("--expect holds " + std::to_string(opt.expect.size()) +
                                  " bytes, --response-len says " +
                                  std::to_string(opt.response_len));
    }
  }
  return opt;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    opt = Parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rtt_client: %s\n", e.what());
    return 2;
  }
  try {
    if (opt.mode == "rtt") {
      RunRtt(opt);
    } else {
      RunPipe(opt);
    }
  } catch (const RunError& e) {
    std::printf("{\"error\": \"%s\"}\n", JsonEscape(e.what()).c_str());
    return 1;
  }
  return 0;
}
