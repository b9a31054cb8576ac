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
// copies one record. Limits: capacity fixed at creation (kFull beyond it);
// string keys up to max_key_bytes; values are float64.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "rtml/error.h"

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
};

// A key: an int64, or string bytes (not owned).
struct Key {
  int64_t i = 0;
  std::string_view s;
  bool is_string = false;
  static Key Int(int64_t v) { return Key{v, {}, false}; }
  static Key Str(std::string_view v) { return Key{0, v, true}; }
};

class FeatureTable {
 public:
  // Throws InputError for a schema that cannot work (no fields, no capacity,
  // absurd sizes).
  explicit FeatureTable(const TableSchema& schema);

  const TableSchema& schema() const { return schema_; }
  uint64_t slots() const { return mask_ + 1; }

  // Stores num_fields values with event time event_ns unless the stored record
  // is newer.
  TableStatus Upsert(const Key& key, const double* values, int64_t event_ns) noexcept;

  // Copies the values (num_fields) and event time of key. kNotFound when the
  // key is absent, deleted, or expired at now_ns: expired values read as
  // missing, never as stale numbers. Lock-free.
  TableStatus Get(const Key& key, int64_t now_ns, double* values, int64_t* event_ns) const noexcept;

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

  std::atomic<uint64_t>* Record(uint64_t slot) const { return words_.get() + slot * record_words_; }
  uint64_t Hash(const Key& key) const noexcept;
  TableStatus CheckKey(const Key& key) const noexcept;
  bool KeyEquals(const std::atomic<uint64_t>* rec, const Key& key) const noexcept;
  void StoreKey(std::atomic<uint64_t>* rec, const Key& key) noexcept;
  // Writes a record's values and event time (the caller holds its seqlock).
  void StoreValues(std::atomic<uint64_t>* rec, const double* values, int64_t event_ns) noexcept;
  uint64_t Lock(std::atomic<uint64_t>* rec) const noexcept;  // returns the odd seq taken
  void Unlock(std::atomic<uint64_t>* rec, uint64_t odd_seq) const noexcept;
  void LockStripe(uint64_t h) noexcept;
  void UnlockStripe(uint64_t h) noexcept;
  bool Expired(int64_t event_ns, int64_t now_ns) const noexcept {
    return schema_.ttl_ns > 0 && now_ns - event_ns >= schema_.ttl_ns;
  }
  // Copies slot's record if it is live (and holds key, when key is given).
  // Returns false when it is not. The copy is consistent (seqlock).
  bool Read(uint64_t slot, const Key* key, double* values, int64_t* event_ns,
            std::string* key_out, int64_t* int_key_out) const noexcept;

  TableSchema schema_;
  uint64_t key_words_ = 1;
  uint64_t record_words_ = 0;
  uint64_t mask_ = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
  std::unique_ptr<std::atomic<uint32_t>[]> stripes_;
  std::atomic<uint64_t> live_{0};
};

template <typename Fn>
void FeatureTable::ForEach(int64_t now_ns, Fn&& fn) const {
  std::unique_ptr<double[]> values(new double[schema_.num_fields]);
  std::string skey;
  for (uint64_t slot = 0; slot <= mask_; ++slot) {
    int64_t event_ns = 0;
    int64_t ikey = 0;
    if (!Read(slot, nullptr, values.get(), &event_ns, &skey, &ikey)) continue;
    if (Expired(event_ns, now_ns)) continue;
    const Key key = schema_.key_kind == KeyKind::kString ? Key::Str(skey) : Key::Int(ikey);
    fn(key, static_cast<const double*>(values.get()), event_ns);
  }
}

}  // namespace rtml
