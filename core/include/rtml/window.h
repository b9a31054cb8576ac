// rtml::WindowTable: sliding event-time window aggregates per entity (count,
// sum, mean, min, max, stddev, last over e.g. 1m, 10m, 1h, 24h), kept as rings
// of time buckets ("tiling") inside the records of a FeatureTable.
//
// Resolution. Each window W is cut into k = W / r buckets of width r, where r
// is the smallest multiple of the base bucket with k <= max_buckets and W a
// multiple of r. Windows of one resolution share one ring; a ring holds its
// largest window's k buckets plus history_buckets + 1 more, so that events a
// little ahead of a query, and "as of" queries a little in the past, still
// find every bucket they need.
//
// Semantics (a query at time now, ring of width r, window of k buckets):
//   - the window holds the events of buckets floor(now / r) - k + 1 ...
//     floor(now / r): it spans between W - r and W of event time up to now,
//     plus the events already ingested into now's own bucket with a later time
//     (resolution is one bucket);
//   - out-of-order events land in their own bucket, so they count exactly as
//     in-order ones would;
//   - an event older than every bucket its rings still hold is dropped and
//     counted (Counters::dropped), never silently lost;
//   - a ring holds the buckets ending with its entity's newest event; a query
//     "as of" a time so far back that a window needs a bucket the ring no
//     longer holds answers NaN for that window (every op, count included),
//     never a partial number;
//   - an entity without events in a window reads count 0, sum 0 and NaN for
//     mean, min, max, stddev (population) and last.
//
// Each ring also keeps an occupancy bitmap (bit s set while slot s holds a
// bucket inside the ring's span), so a query reads only occupied buckets:
// sparse entities, the common case, cost a bitmap scan plus their few buckets.
//
// Thread-safety and progress: Ingest may run on any number of threads (a
// record is updated under its seqlock; writers of one entity serialize).
// Query is lock-free and never blocks writers; it never mixes two states of a
// record. Cost: Ingest O(number of rings); Query O(buckets of the rings), in
// place, no allocation. Both are noexcept hot paths.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rtml/feature_table.h"

namespace rtml {

enum class WindowOp : uint8_t { kCount, kSum, kMean, kMin, kMax, kStddev, kLast };

struct WindowSpec {
  KeyKind key_kind = KeyKind::kString;
  uint32_t max_key_bytes = 64;
  uint64_t capacity = 1024;            // entities
  std::vector<WindowOp> ops;           // output columns: op-major, then window
  std::vector<int64_t> windows_ns;     // each a positive multiple of bucket_ns
  int64_t bucket_ns = 10'000'000'000;  // the finest resolution
  uint32_t max_buckets = 60;           // per window, sets the coarser resolutions
  int64_t history_ns = 0;              // how far behind an entity's newest event
                                       // "as of" queries stay answerable
};

// Resolution picked for one window.
struct WindowLayout {
  int64_t window_ns = 0;
  int64_t bucket_ns = 0;   // r
  uint32_t buckets = 0;    // k = window_ns / bucket_ns
  uint32_t ring = 0;       // index into the rings
  uint32_t ring_buckets = 0;  // buckets the ring holds, ending at the newest event's
};

struct IngestCounters {
  uint64_t events = 0;   // stored in at least one ring
  uint64_t late = 0;     // stored, but older than the entity's newest event
  uint64_t dropped = 0;  // too old for every ring: not stored
};

class WindowTable {
 public:
  // Throws InputError for a spec that cannot work (no ops or windows, a window
  // not a multiple of the bucket, absurd sizes).
  explicit WindowTable(const WindowSpec& spec) : WindowTable(MakePlan(spec)) {}

  const WindowSpec& spec() const { return spec_; }
  const std::vector<WindowLayout>& layout() const { return layout_; }
  uint32_t num_columns() const { return static_cast<uint32_t>(spec_.ops.size() * spec_.windows_ns.size()); }
  // Bytes of one entity's record (rings included).
  uint64_t record_bytes() const;
  const FeatureTable& table() const { return table_; }
  FeatureTable& table() { return table_; }

  // Adds one event. kOk when stored, kStale when dropped as too old (counted),
  // kFull / kKeyTooLong / kBadKeyKind / kBadValue (not finite) when refused
  // (nothing changed).
  TableStatus Ingest(const Key& key, double value, int64_t event_ns) noexcept;

  // Fills out[num_columns()] with the aggregates of key as of now_ns, in the
  // order ops x windows (column op * windows + window). kOk when the entity has
  // a record, kNotFound when not (out then holds the empty-window values).
  TableStatus Query(const Key& key, int64_t now_ns, double* out) const noexcept;

  // A hint that Query(key, now_ns) comes soon: prefetches the buckets it reads.
  void Prefetch(const Key& key, int64_t now_ns) const noexcept;

  IngestCounters counters() const noexcept;
  // Restores counters from a snapshot.
  void SetCounters(const IngestCounters& c) noexcept;

  // Deletes entities with no event in any ring's span before now_ns.
  uint64_t Sweep(int64_t now_ns) noexcept { return table_.Sweep(now_ns); }

 private:
  struct Ring {
    int64_t bucket_ns;
    uint32_t length;       // buckets held
    uint32_t max_window;   // largest k of its windows
    uint32_t offset;       // first bucket word in the record's value area
    uint32_t bits;         // first word of the occupancy bitmap (length bits)
  };
  // Word offsets of a bucket's fields; -1 when the ops do not need the field.
  struct BucketLayout {
    uint32_t words = 2;  // idx, count always
    int sum = -1, m2 = -1, min = -1, max = -1, last_ts = -1, last_val = -1;
  };

  // Windows of one ring by increasing k: (k, window index).
  using RingWindows = std::vector<std::pair<uint32_t, uint32_t>>;
  struct Plan {
    WindowSpec spec;
    std::vector<WindowLayout> layout;
    std::vector<Ring> rings;
    std::vector<RingWindows> ring_windows;
    BucketLayout bucket;
    TableSchema schema;
  };
  static Plan MakePlan(const WindowSpec& spec);
  explicit WindowTable(Plan plan);
  // Aggregates of one consistent view of a record (runs inside the seqlock).
  void Compute(const Word* rec, int64_t newest_ns, int64_t now_ns, double* out) const noexcept;
  struct Acc;  // running aggregate of buckets (window.cc)
  void Add(const Word* bucket, uint64_t n, Acc* acc) const noexcept;
  void Emit(uint32_t window, const Acc& a, bool lost, double* out) const noexcept;
  void EmptyColumns(uint32_t window, double* out) const noexcept;
  void LostColumns(uint32_t window, double* out) const noexcept;

  WindowSpec spec_;
  std::vector<WindowLayout> layout_;
  std::vector<Ring> rings_;
  std::vector<RingWindows> ring_windows_;
  BucketLayout bucket_;
  FeatureTable table_;
  // Hot counters, each on its own cache line.
  struct alignas(64) Counter {
    std::atomic<uint64_t> v{0};
  };
  Counter events_, late_, dropped_;
};

}  // namespace rtml
