// libFuzzer target for the server engine: the input is one connection's byte
// stream, served by a Session over the engine of tests/cpp/engine_fixture.h, in chunks of the sizes the input's first byte picks, as
// reads of any size would deliver it. Any crash, over-read or UB (ASan/UBSan)
// fails; so does output that is not a sequence of whole frames.
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DRTML_FUZZ=ON
//   cmake --build build-fuzz --target engine_fuzz
//   build-fuzz/engine_fuzz -dict=tests/fuzz/wire.dict -max_total_time=60
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "rtml/engine.h"
#include "engine_fixture.h"

using namespace rtml;
using namespace rtml::server;

namespace {

rtml::server::EngineConfig Config() {
  rtml::server::EngineConfig c;
  c.max_in_flight = 16;
  c.limits.max_payload = 1 << 16;
  c.limits.max_rows = 64;
  return c;
}

void CheckWholeFrames(const std::string& out) {
  wire::Limits any;
  any.max_payload = 0xFFFFFFFFu;
  wire::FrameSplitter split(reinterpret_cast<const uint8_t*>(out.data()), out.size(), any);
  wire::Frame f;
  wire::Code err;
  while (split.Next(&f, &err) == wire::SplitResult::kFrame) {
  }
  if (split.consumed() != out.size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Shared across inputs, as a server's store is across connections.
  static auto* world = new rtml_test::EngineFixture(Config());
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 64;  // read sizes: 1..64 bytes at a time
  ++data;
  --size;
  Session session(&world->engine);
  std::vector<uint8_t> buf;  // what the connection has received and not yet handled
  for (size_t at = 0; at < size;) {
    const size_t n = std::min(chunk, size - at);
    buf.insert(buf.end(), data + at, data + at + n);
    at += n;
    // An exactly sized copy, so ASan sees any read past what has arrived.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[buf.size()]);
    std::copy(buf.begin(), buf.end(), exact.get());
    Session::Result r = session.Handle(exact.get(), buf.size(), 16);
    while (r.action == Session::Action::kDefer) {  // the caller answers; here: skip the frame
      const size_t skip = r.consumed + session.deferred().size;
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(skip));
      std::copy(buf.begin(), buf.end(), exact.get());
      r = session.Handle(exact.get(), buf.size(), 16);
    }
    if (r.consumed > buf.size()) std::abort();
    buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    CheckWholeFrames(session.out());
    session.ClearOut();
    if (r.action == Session::Action::kClose) break;
  }
  return 0;
}
