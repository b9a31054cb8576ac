// rtml::ServingLog (see rtml/serving_log.h).
#include "rtml/serving_log.h"

#include <algorithm>
#include <cstring>

#include "../common/bits.h"

namespace rtml {

using internal::Bits;
using internal::FromBits;

namespace {

// Slot layout: [seq][position + 1][now_ns][arm][score][keys...][features...];
// position + 1 so that 0 marks a never-written slot.
constexpr uint64_t kSeq = 0, kPos = 1, kNow = 2, kArm = 3, kScore = 4, kHead = 5;

}  // namespace

ServingLog::ServingLog(uint64_t capacity, uint32_t num_features, std::vector<KeyKind> keys, uint32_t max_key_bytes)
    : capacity_(capacity), num_features_(num_features), keys_(std::move(keys)), max_key_bytes_(max_key_bytes) {
  if (capacity < 1 || capacity > (uint64_t{1} << 28)) throw InputError("serving log capacity must be in [1, 2^28]");
  if (max_key_bytes < 1 || max_key_bytes > 4096) throw InputError("max_key_bytes must be in [1, 4096]");
  key_words_ = 1 + (max_key_bytes + 7) / 8;
  slot_words_ = kHead + keys_.size() * key_words_ + num_features;
  words_.reset(new Word[capacity * slot_words_]());
}

ServingLog::~ServingLog() = default;

void ServingLog::Append(const Key* keys, int64_t now_ns, int32_t arm, double score,
                        const double* features) noexcept {
  const uint64_t pos = next_.fetch_add(1, std::memory_order_relaxed);
  Word* s = Slot(pos % capacity_);
  // Take the slot (even -> odd); acquire pairs with the previous writer's release.
  uint64_t seq = s[kSeq].load(std::memory_order_relaxed);
  for (;;) {
    if (!(seq & 1) && s[kSeq].compare_exchange_weak(seq, seq + 1, std::memory_order_acquire,
                                                    std::memory_order_relaxed)) {
      break;
    }
    detail::CpuRelax();
    seq = s[kSeq].load(std::memory_order_relaxed);
  }
#if !defined(__SANITIZE_THREAD__)
  std::atomic_thread_fence(std::memory_order_release);  // odd seq before the data, for readers
#endif
  // A later position may have written this slot while we waited: keep the newer.
  if (LoadWord(s[kPos]) <= pos) {
    StoreWord(s[kPos], pos + 1);
    StoreWord(s[kNow], static_cast<uint64_t>(now_ns));
    StoreWord(s[kArm], static_cast<uint64_t>(static_cast<int64_t>(arm)));
    StoreWord(s[kScore], Bits(score));
    Word* k = s + kHead;
    for (size_t i = 0; i < keys_.size(); ++i, k += key_words_) {
      if (keys_[i] == KeyKind::kInt64) {
        StoreWord(k[0], static_cast<uint64_t>(keys[i].i));
        continue;
      }
      const size_t len = std::min<size_t>(keys[i].s.size(), max_key_bytes_);
      // Length word: stored length, top bit set when the key was truncated.
      StoreWord(k[0], len | (keys[i].s.size() > max_key_bytes_ ? uint64_t{1} << 63 : 0));
      for (size_t off = 0; off < len; off += 8) {
        uint64_t w = 0;
        std::memcpy(&w, keys[i].s.data() + off, std::min<size_t>(8, len - off));
        StoreWord(k[1 + off / 8], w);
      }
    }
    Word* f = s + kHead + keys_.size() * key_words_;
    for (uint32_t j = 0; j < num_features_; ++j) StoreWord(f[j], Bits(features[j]));
  }
  // Release pairs with readers' acquire of seq and the next writer's CAS.
  s[kSeq].store(seq + 2, std::memory_order_release);
}

std::vector<LoggedRow> ServingLog::Snapshot() const {
  std::vector<LoggedRow> rows;
  rows.reserve(static_cast<size_t>(std::min<uint64_t>(capacity_, appended())));
  LoggedRow r;
  for (uint64_t i = 0; i < capacity_; ++i) {
    const Word* s = Slot(i);
    bool have = false;
    for (;;) {
      // Acquire pairs with the writer's release store of the even seq.
      const uint64_t s1 = s[kSeq].load(std::memory_order_acquire);
      if (s1 & 1) {
        detail::CpuRelax();
        continue;
      }
      const uint64_t pos1 = LoadWord(s[kPos]);
      have = pos1 != 0;
      if (have) {
        r.position = pos1 - 1;
        r.now_ns = static_cast<int64_t>(LoadWord(s[kNow]));
        r.arm = static_cast<int32_t>(static_cast<int64_t>(LoadWord(s[kArm])));
        r.score = FromBits(LoadWord(s[kScore]));
        r.str_keys.assign(keys_.size(), std::string());
        r.int_keys.assign(keys_.size(), 0);
        const Word* k = s + kHead;
        for (size_t j = 0; j < keys_.size(); ++j, k += key_words_) {
          if (keys_[j] == KeyKind::kInt64) {
            r.int_keys[j] = static_cast<int64_t>(LoadWord(k[0]));
            continue;
          }
          const size_t len = std::min<size_t>(LoadWord(k[0]) & ~(uint64_t{1} << 63), max_key_bytes_);
          r.str_keys[j].resize(len);
          for (size_t off = 0; off < len; off += 8) {
            const uint64_t w = LoadWord(k[1 + off / 8]);
            std::memcpy(&r.str_keys[j][off], &w, std::min<size_t>(8, len - off));
          }
        }
        const Word* f = s + kHead + keys_.size() * key_words_;
        r.features.resize(num_features_);
        for (uint32_t j = 0; j < num_features_; ++j) r.features[j] = FromBits(LoadWord(f[j]));
      }
      detail::FenceBeforeRecheck();
      if (s[kSeq].load(std::memory_order_relaxed) == s1) break;
    }
    if (have) rows.push_back(r);
  }
  std::sort(rows.begin(), rows.end(), [](const LoggedRow& a, const LoggedRow& b) { return a.position < b.position; });
  return rows;
}

}  // namespace rtml
