// rtml::FeatureTable: a fixed-capacity in-memory table of feature records keyed
// by int64 or by string, updated by an event stream while readers score.
//
// Layout: open addressing (linear probing) over fixed-size records in one
// contiguous arena of 64-bit words. Records hold values and offsets, never
// pointers, so the arena could later live in shared memory.
//   record = [seq][meta][event_ns][key words...][value words...]
//   seq    per-record seqlock: odd while a writer holds the record.
//   meta   (hash & ~3) | state; state 0 empty, 1 claimed (being inserted),
//          2 live, 3 deleted. A slot never returns to empty, so probe chains
//          stay intact; deleted slots are reused by later inserts.
//
// Thread-safety and progress:
//   - Get is lock-free and never blocks: it copies a record between two reads
//     of its seq and retries when a writer touched it, so it never returns a
//     torn record. Every shared word is atomic (relaxed inside the seqlock,
//     acquire/release on seq and meta), so the C++ memory model and TSan agree.
//   - Upsert/Erase may run on any number of threads. A writer takes a record by
//     CAS on its seq (even -> odd) and claims a free slot by CAS on its meta.
//     Writers of keys with the same hash stripe also serialize on a small
//     stripe spinlock, so one key can never be inserted twice; writers block
//     only each other, never readers.
//   - Upsert keeps the latest event time: an event older than the stored one
//     is ignored (kStale), so duplicates and out-of-order delivery are harmless.
// Cost: O(1) expected probes (at most half the slots are ever used); a read
// copies one record; GetMany overlaps the cache misses of a batch of reads.
// Limits: capacity fixed at creation (kFull beyond it); string keys up to
// max_key_bytes; values are float64.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <mutex>

#include "rtml/error.h"
#include "rtml/snapshot.h"

namespace rtml {

enum class KeyKind : uint8_t { kInt64 = 0, kString = 1 };

struct TableSchema {
  KeyKind key_kind = KeyKind::kInt64;
  uint32_t num_fields = 1;
  uint32_t max_key_bytes = 64;  // string keys only
  uint64_t capacity = 1024;     // live records the table holds at most
  int64_t ttl_ns = 0;           // 0: records never expire
};

// Result of a table operation (hot path: no exceptions).
enum class TableStatus : int {
  kOk = 0,
  kNotFound = 1,    // absent, deleted, or expired
  kStale = 2,       // an upsert older than the stored event: ignored
  kFull = 3,        // capacity reached
  kKeyTooLong = 4,  // string key longer than max_key_bytes
  kBadKeyKind = 5,  // an int key for a string table or the reverse
  kBadValue = 6,    // a value the operation cannot store (e.g. NaN in a window)
};

// A key: an int64, or string bytes (not owned).
struct Key {
  int64_t i = 0;
  std::string_view s;
  bool is_string = false;
  static Key Int(int64_t v) { return Key{v, {}, false}; }
  static Key Str(std::string_view v) { return Key{0, v, true}; }
};

// Ordering of a record's data words inside its seqlock. TSan does not model
// stand-alone fences (GCC says so with -Wtsan), so under TSan data words use
// sequentially consistent accesses, which give the same ordering; elsewhere
// relaxed accesses plus the seqlock's two fences.
#if defined(__SANITIZE_THREAD__)
inline constexpr std::memory_order kRecordOrder = std::memory_order_seq_cst;
#else
inline constexpr std::memory_order kRecordOrder = std::memory_order_relaxed;
#endif

// One 64-bit word of a record's value area, read or written inside the record's
// seqlock (Update / Read callbacks).
using Word = std::atomic<uint64_t>;
inline uint64_t LoadWord(const Word& w) noexcept { return w.load(kRecordOrder); }
inline void StoreWord(Word& w, uint64_t v) noexcept { w.store(v, kRecordOrder); }

class FeatureTable {
 public:
  // Throws InputError for a schema that cannot work (no fields, no capacity,
  // absurd sizes) and std::bad_alloc when the address space cannot be had.
  explicit FeatureTable(const TableSchema& schema);
  ~FeatureTable();
  FeatureTable(const FeatureTable&) = delete;
  FeatureTable& operator=(const FeatureTable&) = delete;

  const TableSchema& schema() const { return schema_; }

  // Attaches the store's snapshot gate (see rtml/snapshot.h): writes then
  // copy on write while a snapshot runs. Call before the table is shared.
  void set_gate(SnapshotGate* gate) noexcept { gate_ = gate; }
  uint64_t slots() const { return mask_ + 1; }

  // Stores num_fields values with event time event_ns unless the stored record
  // is newer.
  TableStatus Upsert(const Key& key, const double* values, int64_t event_ns) noexcept;

  // Copies the values (num_fields) and event time of key. kNotFound when the
  // key is absent, deleted, or expired at now_ns: expired values read as
  // missing, never as stale numbers. Lock-free.
  TableStatus Get(const Key& key, int64_t now_ns, double* values, int64_t* event_ns) const noexcept;

  // Get for n keys at once: status[i], event_ns[i] and values[i * num_fields ..]
  // are what Get(keys[i], ...) gives (values and event time are unspecified
  // unless status[i] is kOk). Lock-free, allocation-free, same guarantees as
  // Get. Cost: in a table larger than the CPU caches each Get waits out a
  // cache and TLB miss (~100-200 ns); this checks and hashes each key
  // kGetManyAhead keys before reading it and prefetches the record of its
  // first probe slot, so that many misses overlap: 1.5-2x the reads/s of a
  // Get loop there (docs/store.md, table_bench), about the same in cache.
  // Key bytes are not prefetched: keep them together (one buffer) if you can.
  void GetMany(const Key* keys, size_t n, int64_t now_ns, double* values, int64_t* event_ns,
               TableStatus* status) const noexcept;
  static constexpr size_t kGetManyAhead = 8;  // a power of two; 4 to 32 measured alike

  // A hint for a read of key soon: prefetches the record at key's first probe
  // slot, its header and bytes [value_offset, value_offset + bytes) of its
  // value words (e.g. the ring buckets a window query will read). Reads
  // nothing, never fails; a caller batching lookups overlaps their misses.
  void Prefetch(const Key& key, size_t value_offset_bytes, size_t bytes) const noexcept;

  // Read-modify-write of key's record under its lock, inserting it if absent:
  //   fn(Word* values, bool fresh, int64_t* event_ns) -> TableStatus
  // values are the record's num_fields value words (LoadWord / StoreWord).
  // fresh: the record is new and its words hold garbage (a reused slot), so fn
  // must set every word it will later read. *event_ns is the stored event time
  // (event_ns itself when fresh); fn may change it. When fn returns anything but
  // kOk it must have changed nothing, and a fresh record is not inserted.
  // Readers see the whole change or none of it. Blocks only other writers.
  template <typename Fn>
  TableStatus Update(const Key& key, int64_t event_ns, Fn&& fn) noexcept;

  // Lock-free read of key's record: fn(const Word* values, int64_t event_ns)
  // runs inside the seqlock and may run several times (a writer interfered),
  // so it must overwrite, not accumulate, its outputs, and must stay in bounds
  // whatever the words hold (a torn view is discarded, but fn sees it).
  // Returns kOk after a run on a consistent view, else kNotFound (absent,
  // deleted or expired at now_ns; fn's outputs are then unspecified).
  template <typename Fn>
  TableStatus Read(const Key& key, int64_t now_ns, Fn&& fn) const noexcept;

  TableStatus Erase(const Key& key) noexcept;

  // Deletes every record expired at now_ns; returns how many.
  uint64_t Sweep(int64_t now_ns) noexcept;

  // Live records (exact when no writer runs).
  uint64_t Size() const noexcept { return live_.load(std::memory_order_relaxed); }

  // Visits a consistent copy of every live, unexpired record:
  // fn(const Key&, const double* values, int64_t event_ns). Records written
  // during the visit may or may not be seen. Lock-free.
  template <typename Fn>
  void ForEach(int64_t now_ns, Fn&& fn) const;

 private:
  enum State : uint64_t { kEmpty = 0, kClaimed = 1, kLive = 2, kDeleted = 3 };
  static constexpr size_t kSeqWord = 0;
  static constexpr size_t kMetaWord = 1;
  static constexpr size_t kEventWord = 2;
  static constexpr size_t kKeyWord = 3;
  static constexpr size_t kStripes = 256;
  using UpdateFn = TableStatus (*)(void* ctx, Word* values, bool fresh, int64_t* event_ns);

  Word* Record(uint64_t slot) const { return words_ + slot * record_words_; }
  Word* Values(Word* rec) const { return rec + kKeyWord + key_words_; }
  const Word* Values(const Word* rec) const { return rec + kKeyWord + key_words_; }
  uint64_t Hash(const Key& key) const noexcept;
  TableStatus CheckKey(const Key& key) const noexcept;
  bool KeyEquals(const Word* rec, const Key& key) const noexcept;
  void StoreKey(Word* rec, const Key& key) noexcept;
  void LoadKey(const Word* rec, std::string* key_out, int64_t* int_key_out) const noexcept;
  TableStatus UpdateImpl(const Key& key, int64_t event_ns, UpdateFn fn, void* ctx) noexcept;
  uint64_t Lock(Word* rec) const noexcept;  // returns the odd seq taken
  void Unlock(Word* rec, uint64_t odd_seq) const noexcept;
  void LockStripe(uint64_t h) noexcept;
  void UnlockStripe(uint64_t h) noexcept;
  bool Expired(int64_t event_ns, int64_t now_ns) const noexcept {
    // Unsigned difference: exact for any two int64 times with now > event
    // (times come off the wire unchecked; a signed difference could overflow).
    return schema_.ttl_ns > 0 && now_ns > event_ns &&
           static_cast<uint64_t>(now_ns) - static_cast<uint64_t>(event_ns) >= static_cast<uint64_t>(schema_.ttl_ns);
  }
  // Seqlock read of slot: when it is live (and holds key, if given), runs
  // fn(rec) on a view and returns true once a view is consistent; false when
  // the slot is not such a record.
  template <typename Fn>
  bool ReadSlot(uint64_t slot, const Key* key, Fn&& fn) const noexcept;
  // Read for a key already checked (CheckKey) whose hash is h.
  template <typename Fn>
  TableStatus ReadHashed(const Key& key, uint64_t h, int64_t now_ns, Fn&& fn) const noexcept;

  // -- snapshots (defined in src/store/snapshot.cc) --
  friend class SnapshotGate;
  struct SnapState {
    std::unique_ptr<std::atomic<uint8_t>[]> copied;  // per slot; set under the record lock
    std::mutex mu;                                  // guards out, records, failed
    std::string out;
    uint64_t records = 0;
    bool failed = false;  // a copy did not fit in memory
  };
  // Called by every writer with rec locked, before it changes rec.
  void BeforeWrite(const Word* rec) noexcept {
    // seq_cst: ordered with the gate's publication and with the snapshot
    // scan's read of an empty slot's meta (see ScanForSnapshot).
    if (gate_ != nullptr && gate_->active_.load(std::memory_order_seq_cst)) {
      CopyOnWrite(static_cast<uint64_t>(rec - words_) / record_words_, rec);
    }
  }
  void CopyOnWrite(uint64_t slot, const Word* rec) noexcept;
  void CopyOnce(uint64_t slot, const Word* rec) const noexcept;  // rec locked
  void ScanForSnapshot() const;
  void AppendRecord(const Word* rec, std::string* out) const;  // rec locked and live

  TableSchema schema_;
  uint64_t key_words_ = 1;
  uint64_t record_words_ = 0;
  uint64_t mask_ = 0;
  // The records: one anonymous mapping, zero pages until first written, so a
  // table costs memory for the records it has held, not for its slot count.
  Word* words_ = nullptr;
  size_t mapped_bytes_ = 0;
  std::unique_ptr<std::atomic<uint32_t>[]> stripes_;
  std::atomic<uint64_t> live_{0};
  SnapshotGate* gate_ = nullptr;
  // Set by SnapshotGate::Take before it publishes the cut, reset after the
  // last copy-on-write left (so writers that saw the cut see it set).
  mutable std::unique_ptr<SnapState> snap_;
};

namespace detail {
inline void CpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
// Orders a seqlock reader's data loads before its second read of seq.
inline void FenceBeforeRecheck() noexcept {
#if !defined(__SANITIZE_THREAD__)
  std::atomic_thread_fence(std::memory_order_acquire);
#endif
}
}  // namespace detail

template <typename Fn>
bool FeatureTable::ReadSlot(uint64_t slot, const Key* key, Fn&& fn) const noexcept {
  const Word* rec = Record(slot);
  for (;;) {
    // Acquire pairs with the release store that ends a writer's hold.
    const uint64_t s1 = rec[kSeqWord].load(std::memory_order_acquire);
    if (s1 & 1) {
      detail::CpuRelax();
      continue;
    }
    const uint64_t meta = LoadWord(rec[kMetaWord]);
    const bool hit = (meta & 3) == kLive && (key == nullptr || KeyEquals(rec, *key));
    if (hit) fn(rec);
    detail::FenceBeforeRecheck();
    if (rec[kSeqWord].load(std::memory_order_relaxed) == s1) return hit;
  }
}

template <typename Fn>
TableStatus FeatureTable::Read(const Key& key, int64_t now_ns, Fn&& fn) const noexcept {
  const TableStatus check = CheckKey(key);
  if (check != TableStatus::kOk) return check;
  return ReadHashed(key, Hash(key), now_ns, std::forward<Fn>(fn));
}

template <typename Fn>
TableStatus FeatureTable::ReadHashed(const Key& key, uint64_t h, int64_t now_ns,
                                     Fn&& fn) const noexcept {
  const uint64_t live_meta = (h & ~uint64_t{3}) | kLive;
  const uint64_t mask = mask_;  // a local: fn's stores could alias members
  for (uint64_t i = 0; i <= mask; ++i) {
    const uint64_t slot = (h + i) & mask;
    // Acquire pairs with the release that made the slot's key visible.
    const uint64_t meta = Record(slot)[kMetaWord].load(std::memory_order_acquire);
    if ((meta & 3) == kEmpty) break;
    if (meta != live_meta) continue;
    int64_t event_ns = 0;
    if (ReadSlot(slot, &key, [&](const Word* rec) {
          event_ns = static_cast<int64_t>(LoadWord(rec[kEventWord]));
          fn(Values(rec), event_ns);
        })) {
      return Expired(event_ns, now_ns) ? TableStatus::kNotFound : TableStatus::kOk;
    }
  }
  return TableStatus::kNotFound;
}

template <typename Fn>
TableStatus FeatureTable::Update(const Key& key, int64_t event_ns, Fn&& fn) noexcept {
  using F = std::remove_reference_t<Fn>;
  return UpdateImpl(
      key, event_ns,
      [](void* ctx, Word* values, bool fresh, int64_t* ev) -> TableStatus {
        return (*static_cast<F*>(ctx))(values, fresh, ev);
      },
      const_cast<void*>(static_cast<const void*>(&fn)));
}

template <typename Fn>
void FeatureTable::ForEach(int64_t now_ns, Fn&& fn) const {
  std::unique_ptr<double[]> values(new double[schema_.num_fields]);
  std::string skey;
  for (uint64_t slot = 0; slot <= mask_; ++slot) {
    int64_t event_ns = 0;
    int64_t ikey = 0;
    const bool live = ReadSlot(slot, nullptr, [&](const Word* rec) {
      event_ns = static_cast<int64_t>(LoadWord(rec[kEventWord]));
      const Word* vals = Values(rec);
      for (uint32_t f = 0; f < schema_.num_fields; ++f) {
        const uint64_t b = LoadWord(vals[f]);
        std::memcpy(&values[f], &b, sizeof(double));
      }
      LoadKey(rec, &skey, &ikey);
    });
    if (!live || Expired(event_ns, now_ns)) continue;
    const Key key = schema_.key_kind == KeyKind::kString ? Key::Str(skey) : Key::Int(ikey);
    fn(key, static_cast<const double*>(values.get()), event_ns);
  }
}

}  // namespace rtml
