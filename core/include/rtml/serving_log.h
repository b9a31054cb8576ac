// rtml::ServingLog: a ring of the last N scored rows (request keys, time,
// assembled features, score, arm), so that training data can be built from
// exactly what serving saw.
//
// Thread-safety and progress: Append runs on every scoring thread at once; a
// writer takes the next position with one fetch_add and writes its slot under
// the slot's seqlock (a CAS, so two writers that wrap onto one slot serialize;
// with N much larger than the number of threads they never meet). Snapshot
// copies each slot consistently (seqlock read, retried if a writer touched it)
// and never blocks writers. Cost per row: one fetch_add, one CAS, and a copy of
// the row (8 bytes per feature and per key word). Memory: N slots of
// 5 + keys * (1 + max_key_bytes / 8) + features words.
// Limits: string keys longer than max_key_bytes are stored truncated (and
// flagged); capacity and shape are fixed at creation.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rtml/feature_table.h"

namespace rtml {

struct LoggedRow {
  uint64_t position = 0;  // 0-based count of rows ever logged
  int64_t now_ns = 0;
  int32_t arm = 0;
  double score = 0;
  std::vector<std::string> str_keys;  // per key (empty for int keys)
  std::vector<int64_t> int_keys;      // per key (0 for str keys)
  std::vector<double> features;
};

class ServingLog {
 public:
  ServingLog(uint64_t capacity, uint32_t num_features, std::vector<KeyKind> keys, uint32_t max_key_bytes = 64);
  ~ServingLog();
  ServingLog(const ServingLog&) = delete;
  ServingLog& operator=(const ServingLog&) = delete;

  // Hot path: noexcept, allocation-free.
  void Append(const Key* keys, int64_t now_ns, int32_t arm, double score, const double* features) noexcept;

  // The rows still in the ring, oldest first (at most capacity). Allocates.
  std::vector<LoggedRow> Snapshot() const;

  uint64_t capacity() const { return capacity_; }
  uint64_t appended() const { return next_.load(std::memory_order_relaxed); }
  uint32_t num_features() const { return num_features_; }
  const std::vector<KeyKind>& keys() const { return keys_; }

 private:
  Word* Slot(uint64_t i) const { return words_.get() + i * slot_words_; }

  uint64_t capacity_;
  uint32_t num_features_;
  std::vector<KeyKind> keys_;
  uint32_t max_key_bytes_;
  uint64_t key_words_;  // per key: length word + bytes
  uint64_t slot_words_;
  std::unique_ptr<Word[]> words_;
  alignas(64) std::atomic<uint64_t> next_{0};
};

}  // namespace rtml
