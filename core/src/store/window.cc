// rtml::WindowTable (see rtml/window.h for the contract).
#include "rtml/window.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "../common/bits.h"

namespace rtml {

using internal::Bits;
using internal::FromBits;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr uint32_t kMaxRecordWords = 65536;

inline int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

inline double LoadD(const Word& w) { return FromBits(LoadWord(w)); }
inline void StoreD(Word& w, double v) { StoreWord(w, Bits(v)); }

}  // namespace

// Running aggregate over buckets (Chan et al.'s pairwise update for m2).
struct WindowTable::Acc {
  uint64_t n = 0;
  double sum = 0, m2 = 0;
  double mn = std::numeric_limits<double>::infinity();
  double mx = -std::numeric_limits<double>::infinity();
  int64_t last_ts = std::numeric_limits<int64_t>::min();
  double last = kNaN;
};

WindowTable::Plan WindowTable::MakePlan(const WindowSpec& spec) {
  if (spec.ops.empty()) throw InputError("a window set needs at least one op");
  if (spec.windows_ns.empty()) throw InputError("a window set needs at least one window");
  for (size_t i = 0; i < spec.ops.size(); ++i) {
    if (static_cast<int>(spec.ops[i]) > static_cast<int>(WindowOp::kLast)) {
      throw InputError("unknown window op code " + std::to_string(static_cast<int>(spec.ops[i])));
    }
    for (size_t j = 0; j < i; ++j) {
      if (spec.ops[i] == spec.ops[j]) throw InputError("window ops must be distinct");
    }
  }
  if (spec.bucket_ns <= 0) throw InputError("bucket must be positive");
  if (spec.max_buckets < 1 || spec.max_buckets > 100000) {
    throw InputError("max_buckets must be in [1, 100000], got " + std::to_string(spec.max_buckets));
  }
  if (spec.history_ns < 0) throw InputError("history must be >= 0");
  Plan p;
  p.spec = spec;
  for (size_t i = 0; i < spec.windows_ns.size(); ++i) {
    const int64_t w = spec.windows_ns[i];
    if (w <= 0 || w % spec.bucket_ns != 0) {
      throw InputError("window of " + std::to_string(w) + " ns is not a positive multiple of the bucket (" +
                       std::to_string(spec.bucket_ns) + " ns)");
    }
    for (size_t j = 0; j < i; ++j) {
      if (spec.windows_ns[j] == w) throw InputError("windows must be distinct");
    }
    const int64_t q = w / spec.bucket_ns;
    if (q > (int64_t{1} << 32)) {
      throw InputError("window of " + std::to_string(w) + " ns holds more than 2^32 buckets");
    }
    // Smallest m dividing q with q / m <= max_buckets: the finest resolution
    // whose buckets tile the window exactly.
    int64_t m = std::max<int64_t>(1, (q + spec.max_buckets - 1) / spec.max_buckets);
    while (q % m != 0) ++m;
    WindowLayout l;
    l.window_ns = w;
    l.bucket_ns = spec.bucket_ns * m;
    l.buckets = static_cast<uint32_t>(q / m);
    p.layout.push_back(l);
  }
  // Rings by resolution, finest first.
  std::vector<int64_t> widths;
  for (const auto& l : p.layout) widths.push_back(l.bucket_ns);
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  p.rings.resize(widths.size());
  p.ring_windows.resize(widths.size());
  for (size_t r = 0; r < widths.size(); ++r) {
    p.rings[r] = Ring{widths[r], 0, 0, 0, 0};
  }
  for (uint32_t i = 0; i < p.layout.size(); ++i) {
    auto& l = p.layout[i];
    l.ring = static_cast<uint32_t>(std::lower_bound(widths.begin(), widths.end(), l.bucket_ns) - widths.begin());
    auto& ring = p.rings[l.ring];
    ring.max_window = std::max(ring.max_window, l.buckets);
    p.ring_windows[l.ring].emplace_back(l.buckets, i);
  }
  // Bucket fields the ops need.
  BucketLayout& b = p.bucket;
  auto has = [&](WindowOp op) { return std::find(spec.ops.begin(), spec.ops.end(), op) != spec.ops.end(); };
  auto take = [&](int* field) { *field = static_cast<int>(b.words++); };
  if (has(WindowOp::kSum) || has(WindowOp::kMean) || has(WindowOp::kStddev)) take(&b.sum);
  if (has(WindowOp::kStddev)) take(&b.m2);
  if (has(WindowOp::kMin)) take(&b.min);
  if (has(WindowOp::kMax)) take(&b.max);
  if (has(WindowOp::kLast)) {
    take(&b.last_ts);
    take(&b.last_val);
  }
  uint64_t words = 0;
  int64_t ttl = 0;
  for (size_t r = 0; r < p.rings.size(); ++r) {
    auto& ring = p.rings[r];
    std::sort(p.ring_windows[r].begin(), p.ring_windows[r].end());
    const int64_t history = (spec.history_ns + ring.bucket_ns - 1) / ring.bucket_ns;
    const uint64_t length = uint64_t{ring.max_window} + 1 + static_cast<uint64_t>(history);
    // Occupancy bitmap, then the buckets. Bit s is set while slot s holds a
    // bucket inside the ring's span, so queries skip the others unread.
    const uint64_t bitmap_words = (length + 63) / 64;
    words += bitmap_words + length * b.words;
    if (words > kMaxRecordWords) {
      throw InputError("an entity's rings would need more than " + std::to_string(kMaxRecordWords) +
                       " words; lower max_buckets or history");
    }
    ring.length = static_cast<uint32_t>(length);
    ring.offset = static_cast<uint32_t>(words - length * b.words);
    ring.bits = static_cast<uint32_t>(ring.offset - bitmap_words);
    for (const auto& [k, wi] : p.ring_windows[r]) p.layout[wi].ring_buckets = ring.length;
    // After a ring's whole span without events every window is empty, so the
    // record may expire (reads then give the empty-window answer) and be swept.
    ttl = std::max(ttl, static_cast<int64_t>(length) * ring.bucket_ns);
  }
  p.schema.key_kind = spec.key_kind;
  p.schema.max_key_bytes = spec.max_key_bytes;
  p.schema.capacity = spec.capacity;
  p.schema.num_fields = static_cast<uint32_t>(words);
  p.schema.ttl_ns = ttl;
  return p;
}

WindowTable::WindowTable(Plan plan)
    : spec_(std::move(plan.spec)),
      layout_(std::move(plan.layout)),
      rings_(std::move(plan.rings)),
      ring_windows_(std::move(plan.ring_windows)),
      bucket_(plan.bucket),
      table_(plan.schema) {}

uint64_t WindowTable::record_bytes() const {
  return (4 + table_.schema().num_fields) * sizeof(uint64_t) +
         (spec_.key_kind == KeyKind::kString ? 8 + (spec_.max_key_bytes + 7) / 8 * 8 : 0);
}

TableStatus WindowTable::Ingest(const Key& key, double value, int64_t event_ns) noexcept {
  if (!std::isfinite(value)) return TableStatus::kBadValue;
  bool late = false;
  const uint64_t words = table_.schema().num_fields;
  const TableStatus st = table_.Update(key, event_ns, [&](Word* w, bool fresh, int64_t* newest) {
    if (fresh) {
      // Count 0 marks a bucket empty; the other words are set on first use.
      for (uint64_t i = 0; i < words; ++i) StoreWord(w[i], 0);
    }
    bool stored = false;
    for (const Ring& ring : rings_) {
      const int64_t j = FloorDiv(event_ns, ring.bucket_ns);
      const int64_t head = FloorDiv(*newest, ring.bucket_ns);
      if (j <= head - static_cast<int64_t>(ring.length)) continue;  // older than the ring's span
      const int64_t slot = ((j % ring.length) + ring.length) % ring.length;
      Word* bits = w + ring.bits;
      if (!fresh && j > head) {
        // The span moves up to j: buckets head+1 .. j-1 were never written,
        // so their slots hold buckets that just left the span.
        if (j - head - 1 >= static_cast<int64_t>(ring.length)) {
          for (uint32_t i = 0; i < (ring.length + 63) / 64; ++i) StoreWord(bits[i], 0);
        } else {
          int64_t s = ((head + 1) % ring.length + ring.length) % ring.length;
          for (int64_t x = head + 1; x < j; ++x, s = s + 1 == ring.length ? 0 : s + 1) {
            StoreWord(bits[s >> 6], LoadWord(bits[s >> 6]) & ~(uint64_t{1} << (s & 63)));
          }
        }
      }
      StoreWord(bits[slot >> 6], LoadWord(bits[slot >> 6]) | (uint64_t{1} << (slot & 63)));
      Word* b = w + ring.offset + static_cast<uint64_t>(slot) * bucket_.words;
      const int64_t idx = static_cast<int64_t>(LoadWord(b[0]));
      const uint64_t n = LoadWord(b[1]);
      // Inside the span a slot never holds a newer bucket than j (that bucket
      // would be j + length or later, beyond the head), so j is stored here.
      stored = true;
      if (n == 0 || idx != j) {  // the slot starts bucket j
        StoreWord(b[0], static_cast<uint64_t>(j));
        StoreWord(b[1], 1);
        if (bucket_.sum >= 0) StoreD(b[bucket_.sum], value);
        if (bucket_.m2 >= 0) StoreD(b[bucket_.m2], 0.0);
        if (bucket_.min >= 0) StoreD(b[bucket_.min], value);
        if (bucket_.max >= 0) StoreD(b[bucket_.max], value);
        if (bucket_.last_ts >= 0) {
          StoreWord(b[bucket_.last_ts], static_cast<uint64_t>(event_ns));
          StoreD(b[bucket_.last_val], value);
        }
        continue;
      }
      StoreWord(b[1], n + 1);
      if (bucket_.sum >= 0) {
        const double sum = LoadD(b[bucket_.sum]);
        const double new_sum = sum + value;
        StoreD(b[bucket_.sum], new_sum);
        if (bucket_.m2 >= 0) {  // Welford, with the mean as sum / count
          const double delta_old = value - sum / static_cast<double>(n);
          const double delta_new = value - new_sum / static_cast<double>(n + 1);
          StoreD(b[bucket_.m2], LoadD(b[bucket_.m2]) + delta_old * delta_new);
        }
      }
      if (bucket_.min >= 0) StoreD(b[bucket_.min], std::min(LoadD(b[bucket_.min]), value));
      if (bucket_.max >= 0) StoreD(b[bucket_.max], std::max(LoadD(b[bucket_.max]), value));
      if (bucket_.last_ts >= 0 && event_ns >= static_cast<int64_t>(LoadWord(b[bucket_.last_ts]))) {
        StoreWord(b[bucket_.last_ts], static_cast<uint64_t>(event_ns));  // ties: later arrival wins
        StoreD(b[bucket_.last_val], value);
      }
    }
    if (!stored) return TableStatus::kStale;
    late = !fresh && event_ns < *newest;
    *newest = std::max(*newest, event_ns);
    return TableStatus::kOk;
  });
  if (st == TableStatus::kOk) {
    events_.v.fetch_add(1, std::memory_order_relaxed);
    if (late) late_.v.fetch_add(1, std::memory_order_relaxed);
  } else if (st == TableStatus::kStale) {
    dropped_.v.fetch_add(1, std::memory_order_relaxed);
  }
  return st;
}

void WindowTable::EmptyColumns(uint32_t window, double* out) const noexcept {
  const size_t nw = spec_.windows_ns.size();
  for (size_t o = 0; o < spec_.ops.size(); ++o) {
    const WindowOp op = spec_.ops[o];
    out[o * nw + window] = (op == WindowOp::kCount || op == WindowOp::kSum) ? 0.0 : kNaN;
  }
}

void WindowTable::LostColumns(uint32_t window, double* out) const noexcept {
  const size_t nw = spec_.windows_ns.size();
  for (size_t o = 0; o < spec_.ops.size(); ++o) out[o * nw + window] = kNaN;
}

void WindowTable::Emit(uint32_t window, const Acc& a, bool lost, double* out) const noexcept {
  if (lost) {
    LostColumns(window, out);
    return;
  }
  if (a.n == 0) {
    EmptyColumns(window, out);
    return;
  }
  const size_t nw = spec_.windows_ns.size();
  const double n = static_cast<double>(a.n);
  for (size_t o = 0; o < spec_.ops.size(); ++o) {
    double v = kNaN;
    switch (spec_.ops[o]) {
      case WindowOp::kCount: v = n; break;
      case WindowOp::kSum: v = a.sum; break;
      case WindowOp::kMean: v = a.sum / n; break;
      case WindowOp::kMin: v = a.mn; break;
      case WindowOp::kMax: v = a.mx; break;
      case WindowOp::kStddev: v = std::sqrt(std::max(a.m2, 0.0) / n); break;
      case WindowOp::kLast: v = a.last; break;
    }
    out[o * nw + window] = v;
  }
}

void WindowTable::Add(const Word* b, uint64_t n, Acc* acc) const noexcept {
  Acc& a = *acc;
  const double sum = bucket_.sum >= 0 ? LoadD(b[bucket_.sum]) : 0.0;
  if (bucket_.m2 >= 0) {
    const double m2 = LoadD(b[bucket_.m2]);
    if (a.n == 0) {
      a.m2 = m2;
    } else {
      const double na = static_cast<double>(a.n), nb = static_cast<double>(n);
      const double delta = sum / nb - a.sum / na;
      a.m2 += m2 + delta * delta * na * nb / (na + nb);
    }
  }
  a.n += n;
  a.sum += sum;
  if (bucket_.min >= 0) a.mn = std::min(a.mn, LoadD(b[bucket_.min]));
  if (bucket_.max >= 0) a.mx = std::max(a.mx, LoadD(b[bucket_.max]));
  if (bucket_.last_ts >= 0) {
    const int64_t ts = static_cast<int64_t>(LoadWord(b[bucket_.last_ts]));
    if (ts > a.last_ts) {  // buckets are visited newest first: keep the first of a tie
      a.last_ts = ts;
      a.last = LoadD(b[bucket_.last_val]);
    }
  }
}

namespace {

// Calls fn(slot) for every set bit of bits in slots [lo, hi], highest first,
// one word load per 64 slots; stops early when fn returns false.
template <typename Fn>
bool ForSetBitsDown(const Word* bits, int64_t lo, int64_t hi, Fn&& fn) noexcept {
  if (hi < lo) return true;
  for (int64_t w = hi >> 6; w >= (lo >> 6); --w) {
    uint64_t word = LoadWord(bits[w]);
    if (w == (hi >> 6) && (hi & 63) != 63) word &= (uint64_t{1} << ((hi & 63) + 1)) - 1;
    if (w == (lo >> 6)) word &= ~((uint64_t{1} << (lo & 63)) - 1);
    while (word != 0) {
      const int bit = 63 - __builtin_clzll(word);
      if (!fn((w << 6) + bit)) return false;
      word &= ~(uint64_t{1} << bit);
    }
  }
  return true;
}

}  // namespace

void WindowTable::Compute(const Word* rec, int64_t newest_ns, int64_t now_ns,
                          double* out) const noexcept {
  for (size_t r = 0; r < rings_.size(); ++r) {
    const Ring& ring = rings_[r];
    const int64_t cur = FloorDiv(now_ns, ring.bucket_ns);
    // The ring holds the buckets (head - length, head]: older ones are gone,
    // and a window reaching below oldest reads as lost (NaN), never partial.
    const int64_t oldest = FloorDiv(newest_ns, ring.bucket_ns) - ring.length + 1;
    const auto& windows = ring_windows_[r];  // (buckets k, window index), k ascending
    Acc a;
    size_t next = 0;  // next window of this ring to emit
    auto emit_below = [&](int64_t d) {  // windows of at most d buckets are complete
      for (; next < windows.size() && windows[next].first <= d; ++next) {
        Emit(windows[next].second, a, cur - static_cast<int64_t>(windows[next].first) + 1 < oldest, out);
      }
    };
    // Only occupied slots are read: the bitmap is walked from the slot of the
    // current bucket (distance d = 0) downwards with a wrap, up to max_window.
    const int64_t len = ring.length;
    const int64_t max_d = ring.max_window;
    const int64_t cur_slot = ((cur % len) + len) % len;
    const Word* bits = rec + ring.bits;
    auto visit = [&](int64_t slot, int64_t d) {
      emit_below(d);
      const int64_t j = cur - d;
      if (j < oldest) return false;  // older than the span: nothing further is held
      const Word* b = rec + ring.offset + static_cast<uint64_t>(slot) * bucket_.words;
      const uint64_t n = LoadWord(b[1]);
      if (n > 0 && static_cast<int64_t>(LoadWord(b[0])) == j) Add(b, n, &a);
      return true;
    };
    const bool more = ForSetBitsDown(bits, std::max<int64_t>(0, cur_slot - max_d + 1), cur_slot,
                                     [&](int64_t slot) { return visit(slot, cur_slot - slot); });
    if (more) {
      ForSetBitsDown(bits, std::max(cur_slot + 1, cur_slot + len - max_d + 1), len - 1,
                     [&](int64_t slot) { return visit(slot, cur_slot + len - slot); });
    }
    emit_below(max_d);
  }
}

TableStatus WindowTable::Query(const Key& key, int64_t now_ns, double* out) const noexcept {
  const TableStatus st = table_.Read(key, now_ns, [&](const Word* w, int64_t newest_ns) {
    Compute(w, newest_ns, now_ns, out);
  });
  if (st == TableStatus::kOk) return st;
  for (uint32_t i = 0; i < layout_.size(); ++i) EmptyColumns(i, out);
  return st;
}

void WindowTable::Prefetch(const Key& key, int64_t now_ns) const noexcept {
  for (size_t r = 0; r < rings_.size(); ++r) {
    const Ring& ring = rings_[r];
    const int64_t len = ring.length;
    const int64_t cur = FloorDiv(now_ns, ring.bucket_ns);
    // The window's buckets are the slots [first, cur] modulo len, read downwards.
    const int64_t top = ((cur % len) + len) % len;
    const int64_t first = top - static_cast<int64_t>(ring.max_window) + 1;
    const size_t bw = size_t{bucket_.words} * sizeof(uint64_t);
    const size_t base = size_t{ring.offset} * sizeof(uint64_t);
    if (first >= 0) {
      table_.Prefetch(key, base + static_cast<size_t>(first) * bw, static_cast<size_t>(top - first + 1) * bw);
    } else {
      table_.Prefetch(key, base, static_cast<size_t>(top + 1) * bw);
      table_.Prefetch(key, base + static_cast<size_t>(len + first) * bw, static_cast<size_t>(-first) * bw);
    }
  }
}

IngestCounters WindowTable::counters() const noexcept {
  IngestCounters c;
  c.events = events_.v.load(std::memory_order_relaxed);
  c.late = late_.v.load(std::memory_order_relaxed);
  c.dropped = dropped_.v.load(std::memory_order_relaxed);
  return c;
}

void WindowTable::SetCounters(const IngestCounters& c) noexcept {
  events_.v.store(c.events, std::memory_order_relaxed);
  late_.v.store(c.late, std::memory_order_relaxed);
  dropped_.v.store(c.dropped, std::memory_order_relaxed);
}

}  // namespace rtml
