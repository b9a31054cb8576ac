// Tests of rtml::server::Engine / Session: every served operation round-trips
// through the codec; pipelined frames are answered in order, bounded by
// max_frames, with STATS deferred in place; every prefix, every single-byte
// corruption and random mutations of valid request streams are handled without
// a crash or an over-read (inputs live in exactly sized heap buffers, so ASan
// sees any); the token gate; and sessions on several threads while the
// registry changes (TSan).
#include "rtml/engine.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "engine_fixture.h"

using namespace rtml;
using namespace rtml::server;
using Bytes = std::vector<uint8_t>;
using rtml_test::EngineFixture;
using rtml_test::PowersOfTen;

namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kNow = 1'000 * kSec;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kMutations = 3000;
#else
constexpr int kMutations = 30000;
#endif

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

EngineConfig Config(const std::string& token = "") {
  EngineConfig c;
  c.token = token;
  c.max_in_flight = 64;
  c.limits.max_payload = 1 << 16;
  return c;
}

template <typename Encode>
Bytes Encoded(Encode&& encode) {
  Bytes b(1 << 16);
  const size_t n = encode(b.data(), b.size());
  CHECK(n != 0 && n <= b.size());
  b.resize(n);
  return b;
}

Bytes ScoreFrame(uint64_t id, const char* card, double amount) {
  Key keys[1] = {Key::Str(card)};
  wire::ScoreRequest m;
  m.scorer = "s";
  m.now_ns = kNow;
  m.keys = keys;
  m.n_keys = 1;
  m.fields = &amount;
  m.n_fields = 1;
  return Encoded([&](uint8_t* p, size_t c) { return wire::EncodeScoreRequest(id, m, p, c); });
}

Bytes PutFrame(uint64_t id, const char* card, double f0, double f1, int64_t ev) {
  Key keys[1] = {Key::Str(card)};
  const double vals[2] = {f0, f1};
  wire::PutFeaturesRequest m;
  m.table = "card";
  m.n_rows = 1;
  m.n_fields = 2;
  m.keys = keys;
  m.event_ns = &ev;
  m.values = vals;
  return Encoded([&](uint8_t* p, size_t c) { return wire::EncodePutFeaturesRequest(id, m, p, c); });
}

Bytes IngestFrame(uint64_t id, const char* card, double value, int64_t ev) {
  Key keys[1] = {Key::Str(card)};
  wire::IngestRequest m;
  m.window_set = "txn";
  m.n_events = 1;
  m.keys = keys;
  m.event_ns = &ev;
  m.values = &value;
  return Encoded([&](uint8_t* p, size_t c) { return wire::EncodeIngestRequest(id, m, p, c); });
}

Bytes PingFrame(uint64_t id) {
  return Encoded([&](uint8_t* p, size_t c) { return wire::EncodePing(id, 0, "pong", p, c); });
}

// The response frames in out.
std::vector<wire::Frame> Responses(const std::string& out) {
  std::vector<wire::Frame> frames;
  wire::FrameSplitter split(reinterpret_cast<const uint8_t*>(out.data()), out.size(), wire::Limits{});
  wire::Frame f;
  wire::Code err;
  while (split.Next(&f, &err) == wire::SplitResult::kFrame) frames.push_back(f);
  CHECK(split.consumed() == out.size());
  return frames;
}

Bytes Concat(std::initializer_list<Bytes> parts) {
  Bytes all;
  for (const Bytes& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// Handles all of `in` (copied to an exactly sized heap buffer) in one session.
Session::Result HandleAll(Session* s, const Bytes& in, size_t max_frames = 1000) {
  std::unique_ptr<uint8_t[]> exact(new uint8_t[in.size() + (in.empty() ? 1 : 0)]);
  if (!in.empty()) std::memcpy(exact.get(), in.data(), in.size());
  return s->Handle(exact.get(), in.size(), max_frames);
}

}  // namespace

RTML_TEST(OperationsRoundTripThroughTheCodec) {
  EngineFixture fx(Config());
  Session s(&fx.engine);
  const Bytes in = Concat({PutFrame(1, "c1", 0.9, 3, kNow - kSec), IngestFrame(2, "c1", 5.0, kNow - kSec),
                           IngestFrame(3, "c1", 6.0, kNow - 2 * kSec), ScoreFrame(4, "c1", 0.7),
                           ScoreFrame(5, "zz", 0.1), PingFrame(6)});
  const Session::Result r = HandleAll(&s, in);
  CHECK(r.action == Session::Action::kContinue);
  CHECK(r.consumed == in.size() && r.frames == 6);
  const auto resp = Responses(s.out());
  CHECK(resp.size() == 6);
  for (size_t i = 0; i < resp.size(); ++i) {
    CHECK(resp[i].header.request_id == i + 1);
    CHECK(resp[i].header.status == 0);
    CHECK((resp[i].header.flags & wire::kFlagResponse) != 0);
  }
  wire::PutFeaturesResponse put;
  CHECK(wire::DecodePutFeaturesResponse(resp[0], &put) == wire::Code::kOk);
  CHECK(put.n_rows == 1 && put.status[0] == 0);
  wire::IngestResponse ing;
  CHECK(wire::DecodeIngestResponse(resp[2], &ing) == wire::Code::kOk);
  CHECK(ing.accepted == 1 && ing.dropped == 0);
  // c1: amount 0.7 (>= 0.5: +10), card.f0 0.9 (+100), count 2 (+1000): 1111.
  wire::ScoreResponse sc;
  double v = 0;
  CHECK(wire::DecodeScoreResponse(resp[3], &sc) == wire::Code::kOk && sc.n_outputs == 1);
  wire::CopyF64(sc.raw, 1, &v);
  CHECK(v == 1111.0);
  // an unknown card: table and window missing (NaN -> left; count 0 -> left): 1.
  CHECK(wire::DecodeScoreResponse(resp[4], &sc) == wire::Code::kOk);
  wire::CopyF64(sc.raw, 1, &v);
  CHECK(v == 1.0);
}

RTML_TEST(PipelinedScoresAreBatchedAndStillAnsweredOneByOne) {
  EngineFixture fx(Config());
  Session s(&fx.engine);
  Bytes in = PutFrame(1, "c1", 0.9, 3, kNow);
  // 600 SCOREs (runs longer than one batch), with frames that cannot join a
  // run in between: another time, an unknown scorer, a wrong key kind.
  Key int_key[1] = {Key::Int(7)};
  const double amount = 0.7;
  wire::ScoreRequest wrong_kind;
  wrong_kind.scorer = "s";
  wrong_kind.keys = int_key;
  wrong_kind.n_keys = 1;
  wrong_kind.fields = &amount;
  wrong_kind.n_fields = 1;
  for (uint64_t id = 2; id < 602; ++id) {
    Bytes f = ScoreFrame(id, id % 2 ? "c1" : "zz", id % 3 ? 0.7 : 0.1);
    if (id == 100) f[26 + 8 - 1] ^= 0x01;  // now_ns differs from the run's
    if (id == 200) f[26] = 'x';            // scorer "x": NOT_FOUND
    if (id == 300) f = Encoded([&](uint8_t* p, size_t c) { return wire::EncodeScoreRequest(id, wrong_kind, p, c); });
    in.insert(in.end(), f.begin(), f.end());
  }
  const Session::Result r = HandleAll(&s, in);
  CHECK(r.consumed == in.size() && r.frames == 601);
  const auto resp = Responses(s.out());
  CHECK(resp.size() == 601);
  for (uint64_t id = 2; id < 602; ++id) {
    const wire::Frame& f = resp[id - 1];
    CHECK(f.header.request_id == id);
    if (id == 200) {
      CHECK(f.header.status == static_cast<uint16_t>(wire::Code::kNotFound));
      continue;
    }
    if (id == 300) {
      CHECK(f.header.status == static_cast<uint16_t>(wire::Code::kBadKeyKind));
      continue;
    }
    CHECK(f.header.status == 0);
    wire::ScoreResponse sc;
    double v = -1;
    CHECK(wire::DecodeScoreResponse(f, &sc) == wire::Code::kOk);
    wire::CopyF64(sc.raw, 1, &v);
    // c1 has f0 0.9 (+100); "zz" has nothing; amount 0.7 adds 10, 0.1 nothing.
    const double want = 1.0 + (id % 3 ? 10.0 : 0.0) + (id % 2 ? 100.0 : 0.0);
    CHECK(v == want);
  }
}

RTML_TEST(PipelinedPredictsAreBatchedAndStillAnsweredOneByOne) {
  EngineFixture fx(Config());
  Session s(&fx.engine);
  // Frames of 1..3 rows of model m (f = 1 + 10 [x0 >= .5] + 100 [x1 >= .5]),
  // float64 and float32 runs, and a frame of the wrong width in between.
  Bytes in;
  std::vector<std::vector<double>> want;
  for (uint64_t id = 1; id <= 300; ++id) {
    const uint32_t rows = 1 + id % 3;
    const uint32_t cols = id == 150 ? 3 : 2;
    std::vector<double> x64(rows * cols);
    std::vector<float> x32(rows * cols);
    std::vector<double> expect;
    for (uint32_t r = 0; r < rows; ++r) {
      const double a = ((id + r) % 2) ? 0.9 : 0.1, b = ((id + 2 * r) % 5 < 2) ? 0.8 : 0.2;
      x64[r * cols] = a;
      x64[r * cols + 1] = b;
      x32[r * cols] = static_cast<float>(a);
      x32[r * cols + 1] = static_cast<float>(b);
      expect.push_back(1.0 + (a >= 0.5 ? 10.0 : 0.0) + (b >= 0.5 ? 100.0 : 0.0));
    }
    want.push_back(id == 150 ? std::vector<double>{} : expect);
    wire::PredictRequest m;
    m.model = "m";
    m.dtype = id < 200 ? DType::kFloat64 : DType::kFloat32;
    m.n_rows = rows;
    m.n_cols = cols;
    m.data = id < 200 ? static_cast<const void*>(x64.data()) : static_cast<const void*>(x32.data());
    const Bytes f = Encoded([&](uint8_t* p, size_t c) { return wire::EncodePredictRequest(id, m, p, c); });
    in.insert(in.end(), f.begin(), f.end());
  }
  const Session::Result r = HandleAll(&s, in);
  CHECK(r.consumed == in.size() && r.frames == 300);
  const auto resp = Responses(s.out());
  CHECK(resp.size() == 300);
  for (uint64_t id = 1; id <= 300; ++id) {
    const wire::Frame& f = resp[id - 1];
    CHECK(f.header.request_id == id);
    if (id == 150) {
      CHECK(f.header.status == static_cast<uint16_t>(wire::Code::kBadShape));
      continue;
    }
    CHECK(f.header.status == 0);
    wire::PredictResponse p;
    CHECK(wire::DecodePredictResponse(f, &p) == wire::Code::kOk);
    CHECK(p.n_rows == want[id - 1].size() && p.n_outputs == 1);
    std::vector<double> got(p.n_rows);
    wire::CopyF64(p.raw, p.n_rows, got.data());
    CHECK(got == want[id - 1]);
  }
}

RTML_TEST(ErrorsAreFramesAndTheSessionGoesOn) {
  EngineFixture fx(Config());
  Session s(&fx.engine);
  Bytes unknown = PingFrame(2);
  unknown[6] = 0x50;  // opcode 0x0150: reserved for online learning
  unknown[7] = 0x01;
  const Bytes in = Concat({PutFrame(1, "c1", 0.5, 2.5, kNow),  // 2.5 in an integer field
                           unknown, PutFrame(3, "c1", 0.5, 1, WallNs() + 7200 * kSec),  // beyond max_future
                           IngestFrame(4, "c1", std::nan(""), kNow), PingFrame(5)});
  const Session::Result r = HandleAll(&s, in);
  CHECK(r.action == Session::Action::kContinue && r.consumed == in.size());
  const auto resp = Responses(s.out());
  CHECK(resp.size() == 5);
  CHECK(resp[0].header.status == static_cast<uint16_t>(wire::Code::kBadValue));
  CHECK(resp[1].header.status == static_cast<uint16_t>(wire::Code::kUnknownOpcode));
  CHECK(resp[2].header.status == static_cast<uint16_t>(wire::Code::kBadValue));
  CHECK(resp[3].header.status == static_cast<uint16_t>(wire::Code::kBadValue));
  CHECK(resp[4].header.status == 0);
  wire::Code code;
  std::string_view msg;
  CHECK(wire::DecodeError(resp[0], &code, &msg) == wire::Code::kOk);
  CHECK(msg.find("integer") != std::string_view::npos);
  // nothing was stored by the refused writes
  double vals[2];
  int64_t ev;
  CHECK(fx.cards.Get(Key::Str("c1"), kNow, vals, &ev) == TableStatus::kNotFound);
}

RTML_TEST(MaxFramesBoundsABatchAndStatsIsDeferredInPlace) {
  EngineFixture fx(Config());
  Session s(&fx.engine);
  const Bytes stats = Encoded([](uint8_t* p, size_t c) { return wire::EncodeStatsRequest(9, "", p, c); });
  const Bytes in = Concat({PingFrame(1), PingFrame(2), stats, PingFrame(3)});
  Session::Result r = HandleAll(&s, in, 1);
  CHECK(r.frames == 1 && r.action == Session::Action::kContinue);
  size_t at = r.consumed;
  r = HandleAll(&s, Bytes(in.begin() + static_cast<std::ptrdiff_t>(at), in.end()));
  CHECK(r.action == Session::Action::kDefer && r.frames == 1);
  at += r.consumed;
  CHECK(s.deferred().header.request_id == 9);
  CHECK(Responses(s.out()).size() == 2);  // answers before the deferred frame
  at += s.deferred().size;
  r = HandleAll(&s, Bytes(in.begin() + static_cast<std::ptrdiff_t>(at), in.end()));
  CHECK(r.action == Session::Action::kContinue && r.frames == 1);
  CHECK(Responses(s.out()).size() == 3);
}

RTML_TEST(TokenGatesEveryRequestUntilHello) {
  EngineFixture fx(Config("s3cret"));
  {
    Session s(&fx.engine);
    const Session::Result r = HandleAll(&s, Concat({PingFrame(1), PingFrame(2)}));
    CHECK(r.action == Session::Action::kClose);
    const auto resp = Responses(s.out());
    CHECK(resp.size() == 1);
    CHECK(resp[0].header.status == static_cast<uint16_t>(wire::Code::kUnauthorized));
    CHECK((resp[0].header.flags & wire::kFlagClosing) != 0);
  }
  auto hello = [](const char* token) {
    wire::HelloRequest h;
    h.token = token;
    return Encoded([&](uint8_t* p, size_t c) { return wire::EncodeHelloRequest(1, h, p, c); });
  };
  {
    Session s(&fx.engine);
    CHECK(HandleAll(&s, hello("wrong")).action == Session::Action::kClose);
  }
  Session s(&fx.engine);
  const Session::Result r = HandleAll(&s, Concat({hello("s3cret"), PingFrame(2)}));
  CHECK(r.action == Session::Action::kContinue && r.frames == 2);
  CHECK(Responses(s.out())[1].header.status == 0);
}

RTML_TEST(PrefixesCorruptionsAndMutationsNeverCrash) {
  EngineFixture fx(Config());
  const Bytes valid = Concat({PutFrame(1, "c1", 0.9, 3, kNow), IngestFrame(2, "c2", 1.0, kNow),
                              ScoreFrame(3, "c1", 0.7), PingFrame(4)});
  // Every prefix: complete frames are answered, the partial one waits.
  for (size_t cut = 0; cut <= valid.size(); ++cut) {
    Session s(&fx.engine);
    const Session::Result r = HandleAll(&s, Bytes(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(cut)));
    CHECK(r.action == Session::Action::kContinue);
    CHECK(r.consumed <= cut);
    CHECK(Responses(s.out()).size() == r.frames);
  }
  // Every single-byte corruption, and random multi-byte mutations.
  std::mt19937_64 rng(42);
  for (int i = 0; i < static_cast<int>(valid.size()) + kMutations; ++i) {
    Bytes bad = valid;
    if (i < static_cast<int>(valid.size())) {
      bad[static_cast<size_t>(i)] ^= 0xA5;
    } else {
      const int edits = 1 + static_cast<int>(rng() % 8);
      for (int e = 0; e < edits; ++e) bad[rng() % bad.size()] = static_cast<uint8_t>(rng());
      if (rng() % 4 == 0) bad.resize(rng() % bad.size());
    }
    Session s(&fx.engine);
    const Session::Result r = HandleAll(&s, bad);
    CHECK(r.consumed <= bad.size());
    const auto resp = Responses(s.out());  // the output is always whole frames
    if (r.action == Session::Action::kClose) {
      CHECK(!resp.empty() && (resp.back().header.flags & wire::kFlagClosing) != 0);
    }
  }
  // The store holds only what valid writes could have put there.
  fx.cards.ForEach(0, [&](const Key& k, const double*, int64_t) { CHECK(!k.s.empty() || !k.is_string); });
}

RTML_TEST(SessionsOnThreadsWhileTheRegistryChanges) {
  EngineFixture fx(Config());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      Session s(&fx.engine);
      const std::string card = "c" + std::to_string(t);
      for (int i = 0; i < 2000; ++i) {
        const Bytes in = Concat({PutFrame(1, card.c_str(), 0.9, i, kNow), ScoreFrame(2, card.c_str(), 0.7),
                                 IngestFrame(3, card.c_str(), 1.0, kNow)});
        s.ClearOut();
        const Session::Result r = HandleAll(&s, in);
        if (r.frames != 3) bad.fetch_add(1);
        for (const auto& f : Responses(s.out())) {
          if (f.header.status != 0) bad.fetch_add(1);
        }
        if (stop.load()) break;
      }
    });
  }
  std::thread admin([&] {
    for (int i = 0; i < 200; ++i) {
      fx.engine.SetModel("m", PowersOfTen(1 + i % 3));
      fx.engine.SetModel("extra" + std::to_string(i % 4), PowersOfTen(2));
      fx.engine.RemoveModel("extra" + std::to_string((i + 2) % 4));
    }
  });
  admin.join();
  for (auto& th : threads) th.join();
  CHECK(bad.load() == 0);
}

RTML_TEST_MAIN()
