// rtml::FeatureTable (see rtml/feature_table.h for the contract).
#include "rtml/feature_table.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "../common/bits.h"

namespace rtml {

using internal::Mix64;
using internal::Bits;
using internal::FromBits;

namespace {

using detail::CpuRelax;

// Orders a writer's odd seq before its data stores, for readers.
inline void FenceAfterLock() {
#if !defined(__SANITIZE_THREAD__)
  std::atomic_thread_fence(std::memory_order_release);
#endif
}

constexpr std::memory_order kInLock = kRecordOrder;

// String keys are stored as 64-bit words holding 8 key bytes each in memory
// order (the last word zero-padded), as memcpy into a zeroed word gives.
inline uint64_t KeyWord(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// The last n bytes (0 < n < 8) as a zero-padded key word, without a
// variable-length memcpy and without reading past p + n.
inline uint64_t KeyTail(const char* p, size_t n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  auto u8 = [p](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(p[i])); };
  if (n >= 4) {  // two overlapping 4-byte loads; the overlap holds the same bytes
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    return lo | (static_cast<uint64_t>(hi) << (8 * (n - 4)));
  }
  return u8(0) | (u8(n >> 1) << (8 * (n >> 1))) | (u8(n - 1) << (8 * (n - 1)));
#else
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  return w;
#endif
}

__attribute__((always_inline)) inline uint64_t HashKey(const Key& key) {
  if (!key.is_string) return Mix64(static_cast<uint64_t>(key.i) + 0x9E3779B97F4A7C15ULL);
  // A word at a time over the key words KeyEquals compares (a byte loop cost
  // ~4 cycles a byte); Mix64 then spreads every input bit over slot, tag and
  // stripe bits.
  const char* p = key.s.data();
  size_t n = key.s.size();
  uint64_t h = 0xCBF29CE484222325ULL ^ (n * 0x9E3779B97F4A7C15ULL);
  auto round = [&h](uint64_t w) {
    h = (h ^ w) * 0x9FB21C651E98DF25ULL;
    h ^= h >> 32;
  };
  for (; n >= 8; p += 8, n -= 8) round(KeyWord(p));
  if (n > 0) round(KeyTail(p, n));
  return Mix64(h);
}

// Prefetches every cache line of [p, p + bytes) for reading. The loop runs the
// same number of times for every record of a table, so its branch predicts
// perfectly (a trip count that varied with the record's alignment cost a
// mispredict per key); the last prefetch catches the line a misaligned record
// ends in. Always inlined: GCC deems a function whose only effect is a
// prefetch pure and deletes calls to it.
__attribute__((always_inline)) inline void PrefetchLines(const char* p, size_t bytes) {
  for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, /*rw=*/0, /*locality=*/3);
  __builtin_prefetch(p + bytes - 1, /*rw=*/0, /*locality=*/3);
}

// Copies n value words out of a record inside its seqlock. Unrolled by hand:
// GCC does not unroll or vectorize loops of atomic loads.
inline void CopyValues(const Word* vals, uint32_t n, double* out) {
  uint32_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const uint64_t a = vals[j].load(kInLock), b = vals[j + 1].load(kInLock);
    const uint64_t c = vals[j + 2].load(kInLock), d = vals[j + 3].load(kInLock);
    out[j] = FromBits(a);
    out[j + 1] = FromBits(b);
    out[j + 2] = FromBits(c);
    out[j + 3] = FromBits(d);
  }
  for (; j < n; ++j) out[j] = FromBits(vals[j].load(kInLock));
}

}  // namespace

FeatureTable::FeatureTable(const TableSchema& schema) : schema_(schema) {
  if (schema.num_fields < 1 || schema.num_fields > 65536) {
    throw InputError("a table needs 1 to 65536 fields, got " + std::to_string(schema.num_fields));
  }
  if (schema.capacity < 1 || schema.capacity > (uint64_t{1} << 32)) {
    throw InputError("capacity must be in [1, 2^32], got " + std::to_string(schema.capacity));
  }
  if (schema.key_kind == KeyKind::kString) {
    if (schema.max_key_bytes < 1 || schema.max_key_bytes > 4096) {
      throw InputError("max_key_bytes must be in [1, 4096], got " +
                       std::to_string(schema.max_key_bytes));
    }
    key_words_ = 1 + (schema.max_key_bytes + 7) / 8;
  }
  if (schema.ttl_ns < 0) throw InputError("ttl must be >= 0");
  record_words_ = kKeyWord + key_words_ + schema.num_fields;
  uint64_t slots = 16;
  while (slots < 2 * schema.capacity) slots <<= 1;  // at most half full
  mask_ = slots - 1;
  mapped_bytes_ = slots * record_words_ * sizeof(Word);
  void* p = mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Zero pages: every record starts empty (seq 0, meta 0).
  words_ = static_cast<Word*>(p);
  stripes_.reset(new std::atomic<uint32_t>[kStripes]());
}

FeatureTable::~FeatureTable() { munmap(words_, mapped_bytes_); }

uint64_t FeatureTable::Hash(const Key& key) const noexcept { return HashKey(key); }

TableStatus FeatureTable::CheckKey(const Key& key) const noexcept {
  if (key.is_string != (schema_.key_kind == KeyKind::kString)) return TableStatus::kBadKeyKind;
  if (key.is_string && key.s.size() > schema_.max_key_bytes) return TableStatus::kKeyTooLong;
  return TableStatus::kOk;
}

bool FeatureTable::KeyEquals(const Word* rec, const Key& key) const noexcept {
  const Word* k = rec + kKeyWord;
  if (!key.is_string) return k[0].load(kInLock) == static_cast<uint64_t>(key.i);
  size_t n = key.s.size();
  if (k[0].load(kInLock) != n) return false;
  const char* p = key.s.data();
  for (++k; n >= 8; p += 8, n -= 8, ++k) {
    if (k->load(kInLock) != KeyWord(p)) return false;
  }
  return n == 0 || k->load(kInLock) == KeyTail(p, n);
}

void FeatureTable::StoreKey(Word* rec, const Key& key) noexcept {
  Word* k = rec + kKeyWord;
  if (!key.is_string) {
    k[0].store(static_cast<uint64_t>(key.i), kInLock);
    return;
  }
  k[0].store(key.s.size(), kInLock);
  for (uint64_t w = 0; w + 1 < key_words_; ++w) {
    uint64_t word = 0;
    const size_t off = w * 8;
    if (off + 8 <= key.s.size()) {
      word = KeyWord(key.s.data() + off);
    } else if (off < key.s.size()) {
      word = KeyTail(key.s.data() + off, key.s.size() - off);
    }
    k[1 + w].store(word, kInLock);
  }
}

void FeatureTable::LoadKey(const Word* rec, std::string* key_out,
                           int64_t* int_key_out) const noexcept {
  const uint64_t first = rec[kKeyWord].load(kInLock);
  *int_key_out = static_cast<int64_t>(first);
  if (schema_.key_kind != KeyKind::kString) return;
  // The length may be torn garbage on a view the seqlock later discards: clamp.
  const uint64_t len = std::min<uint64_t>(first, schema_.max_key_bytes);
  key_out->resize(len);
  for (uint64_t off = 0; off < len; off += 8) {
    const uint64_t w = rec[kKeyWord + 1 + off / 8].load(kInLock);
    std::memcpy(&(*key_out)[off], &w, std::min<uint64_t>(8, len - off));
  }
}

uint64_t FeatureTable::Lock(Word* rec) const noexcept {
  for (;;) {
    uint64_t s = rec[kSeqWord].load(std::memory_order_relaxed);
    // Acquire pairs with the release store that ended the previous writer's
    // hold, so its stores are visible to this writer.
    if (!(s & 1) && rec[kSeqWord].compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                                        std::memory_order_relaxed)) {
      // Orders the odd seq before this writer's data stores, for readers.
      FenceAfterLock();
      return s + 1;
    }
    CpuRelax();
  }
}

void FeatureTable::Unlock(Word* rec, uint64_t odd_seq) const noexcept {
  // Release pairs with readers' acquire of seq and the next writer's Lock.
  rec[kSeqWord].store(odd_seq + 1, std::memory_order_release);
}

void FeatureTable::LockStripe(uint64_t h) noexcept {
  std::atomic<uint32_t>& s = stripes_[(h >> 2) % kStripes];
  uint32_t expected = 0;
  // Acquire pairs with UnlockStripe's release.
  while (!s.compare_exchange_weak(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
    expected = 0;
    CpuRelax();
  }
}

void FeatureTable::UnlockStripe(uint64_t h) noexcept {
  stripes_[(h >> 2) % kStripes].store(0, std::memory_order_release);
}

TableStatus FeatureTable::Get(const Key& key, int64_t now_ns, double* values,
                              int64_t* event_ns) const noexcept {
  const uint32_t n = schema_.num_fields;
  return Read(key, now_ns, [&](const Word* vals, int64_t ev) {
    *event_ns = ev;
    CopyValues(vals, n, values);
  });
}

void FeatureTable::GetMany(const Key* keys, size_t n, int64_t now_ns, double* values,
                           int64_t* event_ns, TableStatus* status) const noexcept {
  static_assert((kGetManyAhead & (kGetManyAhead - 1)) == 0, "kGetManyAhead: a power of two");
  // Members the loop needs, as locals: stores to the outputs could alias them
  // and would force reloads.
  const uint32_t f = schema_.num_fields;
  const Word* const words = words_;
  const uint64_t mask = mask_;
  const uint64_t record_words = record_words_;
  // Beyond a few lines the copy streams by itself.
  const size_t prefetch_bytes = std::min<size_t>(record_words * sizeof(Word), 512);
  // Key j is staged (checked, hashed, its first probe slot's record prefetched)
  // kGetManyAhead keys before it is read; hashes[j % kGetManyAhead] holds its
  // hash in between, and status[j] its check.
  uint64_t hashes[kGetManyAhead] = {};  // read (unused) for keys that failed their check
  auto stage = [&](size_t j) {
    status[j] = CheckKey(keys[j]);
    if (status[j] != TableStatus::kOk) return;
    const uint64_t h = HashKey(keys[j]);
    hashes[j & (kGetManyAhead - 1)] = h;
    PrefetchLines(reinterpret_cast<const char*>(words + (h & mask) * record_words), prefetch_bytes);
  };
  for (size_t j = 0; j < std::min(n, kGetManyAhead); ++j) stage(j);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t h = hashes[i & (kGetManyAhead - 1)];
    if (i + kGetManyAhead < n) stage(i + kGetManyAhead);  // reuses key i's ring entry
    if (status[i] != TableStatus::kOk) continue;
    double* row = values + i * f;
    int64_t* ev_out = event_ns + i;
    status[i] = ReadHashed(keys[i], h, now_ns, [&](const Word* vals, int64_t ev) {
      *ev_out = ev;
      CopyValues(vals, f, row);
    });
  }
}

void FeatureTable::Prefetch(const Key& key, size_t value_offset_bytes, size_t bytes) const noexcept {
  if (CheckKey(key) != TableStatus::kOk) return;
  const Word* rec = words_ + (HashKey(key) & mask_) * record_words_;
  __builtin_prefetch(rec, 0, 3);
  const size_t value_bytes = static_cast<size_t>(schema_.num_fields) * sizeof(Word);
  if (bytes == 0 || value_offset_bytes >= value_bytes) return;
  PrefetchLines(reinterpret_cast<const char*>(Values(rec)) + value_offset_bytes,
                std::min(bytes, value_bytes - value_offset_bytes));
}

TableStatus FeatureTable::Upsert(const Key& key, const double* values, int64_t event_ns) noexcept {
  const uint32_t n = schema_.num_fields;
  return Update(key, event_ns, [&](Word* vals, bool fresh, int64_t* ev) {
    if (!fresh && *ev > event_ns) return TableStatus::kStale;
    for (uint32_t f = 0; f < n; ++f) vals[f].store(Bits(values[f]), kInLock);
    *ev = event_ns;
    return TableStatus::kOk;
  });
}

TableStatus FeatureTable::UpdateImpl(const Key& key, int64_t event_ns, UpdateFn fn,
                                     void* ctx) noexcept {
  const TableStatus check = CheckKey(key);
  if (check != TableStatus::kOk) return check;
  const uint64_t h = Hash(key);
  const uint64_t tag = h & ~uint64_t{3};
  // Runs fn on a locked record and publishes the result.
  auto apply = [&](Word* rec, bool fresh) {
    BeforeWrite(rec);
    int64_t ev = fresh ? event_ns : static_cast<int64_t>(rec[kEventWord].load(kInLock));
    const TableStatus st = fn(ctx, Values(rec), fresh, &ev);
    if (st == TableStatus::kOk) rec[kEventWord].store(static_cast<uint64_t>(ev), kInLock);
    return st;
  };
  // Reserves one unit of capacity for a new record. A CAS loop rather than
  // add-then-undo, so a refused reservation never makes another writer's
  // insert fail spuriously: the limit is exact under concurrency.
  auto reserve = [&] {
    uint64_t n = live_.load(std::memory_order_relaxed);
    while (n < schema_.capacity) {
      if (live_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  };
  // Writers of one key share a stripe: the scan for the key and the claim of a
  // free slot cannot interleave with another insert of the same key.
  LockStripe(h);
  TableStatus result = TableStatus::kFull;
  for (bool done = false; !done;) {
    int64_t free_slot = -1;
    uint64_t free_meta = 0;
    bool found = false;
    bool rescan = false;
    for (uint64_t i = 0; i <= mask_ && !found && !rescan; ++i) {
      const uint64_t slot = (h + i) & mask_;
      Word* rec = Record(slot);
      const uint64_t meta = rec[kMetaWord].load(std::memory_order_acquire);
      const uint64_t state = meta & 3;
      if (state == kEmpty) {
        if (free_slot < 0) {
          free_slot = static_cast<int64_t>(slot);
          free_meta = meta;
        }
        break;
      }
      if (state == kClaimed) continue;  // another key's insert (same-key writers hold our stripe)
      if ((meta & ~uint64_t{3}) == tag) {
        const uint64_t s = Lock(rec);
        const uint64_t m2 = rec[kMetaWord].load(std::memory_order_relaxed);
        const uint64_t st2 = m2 & 3;
        if ((m2 & ~uint64_t{3}) == tag && (st2 == kLive || st2 == kDeleted) && KeyEquals(rec, key)) {
          found = true;
          uint64_t expect = m2;
          if (st2 == kLive) {
            result = apply(rec, false);
          } else if (!rec[kMetaWord].compare_exchange_strong(expect, tag | kClaimed,
                                                              std::memory_order_seq_cst,
                                                              std::memory_order_relaxed)) {
            // Another key's writer claimed this tombstone as a free slot (a
            // CAS taken without the record lock): our key is gone from here.
            found = false;
            rescan = true;
          } else if (!reserve()) {
            rec[kMetaWord].store(tag | kDeleted, std::memory_order_release);
            result = TableStatus::kFull;
          } else {
            result = apply(rec, true);
            if (result == TableStatus::kOk) {
              rec[kMetaWord].store(tag | kLive, std::memory_order_release);
            } else {
              rec[kMetaWord].store(tag | kDeleted, std::memory_order_release);
              live_.fetch_sub(1, std::memory_order_relaxed);
            }
          }
        } else if (st2 == kDeleted && free_slot < 0) {
          free_slot = static_cast<int64_t>(slot);
          free_meta = m2;
        }
        Unlock(rec, s);
        continue;
      }
      if (state == kDeleted && free_slot < 0) {
        free_slot = static_cast<int64_t>(slot);
        free_meta = meta;
      }
    }
    if (found) break;
    if (rescan) continue;
    if (free_slot < 0 || live_.load(std::memory_order_relaxed) >= schema_.capacity) {
      result = TableStatus::kFull;
      break;
    }
    Word* rec = Record(static_cast<uint64_t>(free_slot));
    // Claim the free slot; another key's writer may take it first: scan again.
    // seq_cst: a snapshot scan that still reads this slot as empty must come
    // before this claim, so this writer's gate check sees the snapshot's cut.
    if (!rec[kMetaWord].compare_exchange_strong(free_meta, tag | kClaimed, std::memory_order_seq_cst,
                                                std::memory_order_relaxed)) {
      continue;
    }
    if (!reserve()) {  // another writer took the last unit meanwhile
      // Never back to empty: a later key may have probed past this slot.
      rec[kMetaWord].store(tag | kDeleted, std::memory_order_release);
      result = TableStatus::kFull;
      break;
    }
    const uint64_t s = Lock(rec);
    StoreKey(rec, key);
    result = apply(rec, true);
    if (result == TableStatus::kOk) {
      // Release: a writer or reader that sees kLive (acquire) sees the key.
      rec[kMetaWord].store(tag | kLive, std::memory_order_release);
    } else {
      // Never back to empty: a later key may have probed past this slot.
      rec[kMetaWord].store(tag | kDeleted, std::memory_order_release);
      live_.fetch_sub(1, std::memory_order_relaxed);
    }
    Unlock(rec, s);
    done = true;
  }
  UnlockStripe(h);
  return result;
}

TableStatus FeatureTable::Erase(const Key& key) noexcept {
  const TableStatus check = CheckKey(key);
  if (check != TableStatus::kOk) return check;
  const uint64_t h = Hash(key);
  const uint64_t tag = h & ~uint64_t{3};
  LockStripe(h);
  TableStatus result = TableStatus::kNotFound;
  for (uint64_t i = 0; i <= mask_; ++i) {
    const uint64_t slot = (h + i) & mask_;
    Word* rec = Record(slot);
    const uint64_t meta = rec[kMetaWord].load(std::memory_order_acquire);
    if ((meta & 3) == kEmpty) break;
    if ((meta & ~uint64_t{3}) != tag || (meta & 3) != kLive) continue;
    const uint64_t s = Lock(rec);
    const uint64_t m2 = rec[kMetaWord].load(std::memory_order_relaxed);
    const bool hit = m2 == (tag | kLive) && KeyEquals(rec, key);
    if (hit) {
      BeforeWrite(rec);
      rec[kMetaWord].store(tag | kDeleted, std::memory_order_release);
      live_.fetch_sub(1, std::memory_order_relaxed);
      result = TableStatus::kOk;
    }
    Unlock(rec, s);
    if (hit) break;
  }
  UnlockStripe(h);
  return result;
}

uint64_t FeatureTable::Sweep(int64_t now_ns) noexcept {
  if (schema_.ttl_ns <= 0) return 0;
  uint64_t removed = 0;
  for (uint64_t slot = 0; slot <= mask_; ++slot) {
    Word* rec = Record(slot);
    if ((rec[kMetaWord].load(std::memory_order_acquire) & 3) != kLive) continue;
    const uint64_t s = Lock(rec);
    const uint64_t m2 = rec[kMetaWord].load(std::memory_order_relaxed);
    if ((m2 & 3) == kLive &&
        Expired(static_cast<int64_t>(rec[kEventWord].load(std::memory_order_relaxed)), now_ns)) {
      BeforeWrite(rec);
      rec[kMetaWord].store((m2 & ~uint64_t{3}) | kDeleted, std::memory_order_release);
      live_.fetch_sub(1, std::memory_order_relaxed);
      ++removed;
    }
    Unlock(rec, s);
  }
  return removed;
}

}  // namespace rtml
