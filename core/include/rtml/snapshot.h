// rtml::SnapshotGate: point-in-time copies of several FeatureTables (and the
// window tables built on them) taken while writers keep writing.
//
// How: the tables of one store share a gate. Take() prepares each table, then
// publishes the cut with one store to the gate. From then on a writer that is
// about to change a record the snapshot has not copied yet first copies the
// record's old state (copy-on-write at record granularity, under the record's
// own lock), and the snapshot copies every other record under that same lock.
// A writer's check of the gate and its change happen under the record lock, so
// every write is either wholly before the cut (its check came first: included)
// or wholly after it (excluded): the copy is one consistent cut across all
// tables, equal to the state at the moment of publication.
//
// Cost: writers pay one acquire load of the gate per write outside snapshots;
// during one, the first write to each record copies it once. No global pause:
// a reader or writer of one record waits at most one record copy. Memory: the
// copies (roughly the tables' live data) while the snapshot runs.
//
// Thread-safety: Take may be called from any thread; one snapshot runs at a
// time (others wait). Restore must run before the table is shared.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace rtml {

class FeatureTable;

class SnapshotGate {
 public:
  // Appends to sections one section per table (see Restore for its layout),
  // all at one cut. Every table must be attached to this gate. Throws
  // std::bad_alloc when the copies do not fit in memory (nothing is changed).
  void Take(const std::vector<const FeatureTable*>& tables, std::vector<std::string>* sections);

  // True while a snapshot's cut is published (writers then copy on write).
  bool active() const noexcept { return active_.load(std::memory_order_acquire); }

 private:
  friend class FeatureTable;
  std::mutex take_mu_;                 // one snapshot at a time
  std::atomic<bool> active_{false};    // the published cut
  std::atomic<int64_t> in_flight_{0};  // writers inside a copy-on-write
};

// Restores a section written by SnapshotGate::Take into an empty table with
// the same key kind and number of fields. Section layout (little-endian):
//   u32 key kind, u32 num_fields, u32 max_key_bytes, u32 zero, u64 records,
//   then per record: i64 event_ns; the key (i64, or u32 length + bytes);
//   num_fields u64 value words.
// The whole section is checked before anything is written; throws
// SnapshotError naming what is wrong (truncated, schema mismatch, key too long,
// more records than the capacity, duplicate keys).
void RestoreSection(FeatureTable& table, const uint8_t* data, size_t size);

}  // namespace rtml
