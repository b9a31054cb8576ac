// Point-in-time snapshots of FeatureTables (see rtml/snapshot.h), and the
// FeatureTable members that take part in them.
#include "rtml/snapshot.h"

#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "rtml/feature_table.h"

namespace rtml {

namespace {

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

// Bounds-checked reader over a section.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  T Get(const char* what) {
    if (n_ - pos_ < sizeof(T)) Fail(std::string("truncated in ") + what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  const uint8_t* Bytes(size_t len, const char* what) {
    if (n_ - pos_ < len) Fail(std::string("truncated in ") + what);
    const uint8_t* at = p_ + pos_;
    pos_ += len;
    return at;
  }
  size_t left() const { return n_ - pos_; }
  [[noreturn]] static void Fail(const std::string& what) { throw SnapshotError("snapshot section: " + what); }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

}  // namespace

// -- FeatureTable's part -------------------------------------------------------

void FeatureTable::AppendRecord(const Word* rec, std::string* out) const {
  Put<int64_t>(out, static_cast<int64_t>(LoadWord(rec[kEventWord])));
  if (schema_.key_kind == KeyKind::kString) {
    std::string key;
    int64_t unused = 0;
    LoadKey(rec, &key, &unused);
    Put<uint32_t>(out, static_cast<uint32_t>(key.size()));
    out->append(key);
  } else {
    Put<int64_t>(out, static_cast<int64_t>(LoadWord(rec[kKeyWord])));
  }
  const Word* vals = Values(rec);
  for (uint32_t f = 0; f < schema_.num_fields; ++f) Put<uint64_t>(out, LoadWord(vals[f]));
}

void FeatureTable::CopyOnce(uint64_t slot, const Word* rec) const noexcept {
  // Writers and the scan both call this with the record locked: whichever
  // comes first copies the pre-cut state, exactly once.
  SnapState& st = *snap_;
  if (st.copied[slot].exchange(1, std::memory_order_relaxed) != 0 || (LoadWord(rec[kMetaWord]) & 3) != kLive) {
    return;
  }
  std::lock_guard<std::mutex> lock(st.mu);
  try {
    AppendRecord(rec, &st.out);
    ++st.records;
  } catch (const std::bad_alloc&) {
    st.failed = true;
  }
}

void FeatureTable::CopyOnWrite(uint64_t slot, const Word* rec) noexcept {
  // Dekker with Take's active_.store(false) + wait: either this writer sees
  // the cut withdrawn, or Take waits for it to leave.
  gate_->in_flight_.fetch_add(1, std::memory_order_seq_cst);
  if (gate_->active_.load(std::memory_order_seq_cst) && snap_ != nullptr) {
    CopyOnce(slot, rec);
  }
  // Release pairs with Take's acquire wait: the copy above is complete.
  gate_->in_flight_.fetch_sub(1, std::memory_order_release);
}

void FeatureTable::ScanForSnapshot() const {
  for (uint64_t slot = 0; slot <= mask_; ++slot) {
    Word* rec = Record(slot);
    // Never-used slots stay untouched (their pages unmapped): a record can only
    // appear there by a claim that comes after this load, hence after the cut
    // (seq_cst pairs with the claim's CAS and the writer's gate check).
    if ((rec[kMetaWord].load(std::memory_order_seq_cst) & 3) == kEmpty) continue;
    const uint64_t s = Lock(rec);
    CopyOnce(slot, rec);
    Unlock(rec, s);
  }
}

// -- SnapshotGate ----------------------------------------------------------------

void SnapshotGate::Take(const std::vector<const FeatureTable*>& tables, std::vector<std::string>* sections) {
  std::lock_guard<std::mutex> take(take_mu_);
  for (const FeatureTable* t : tables) {
    if (t->gate_ != this) throw InputError("snapshot: a table is not attached to this store's gate");
  }
  for (const FeatureTable* t : tables) {
    auto st = std::make_unique<FeatureTable::SnapState>();
    st->copied.reset(new std::atomic<uint8_t>[t->slots()]());
    t->snap_ = std::move(st);
  }
  // The cut. seq_cst: ordered with every writer's gate check (see header).
  active_.store(true, std::memory_order_seq_cst);
  for (const FeatureTable* t : tables) t->ScanForSnapshot();
  active_.store(false, std::memory_order_seq_cst);
  // Acquire pairs with CopyOnWrite's release: every pre-image is complete.
  while (in_flight_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  bool failed = false;
  for (const FeatureTable* t : tables) {
    FeatureTable::SnapState& st = *t->snap_;
    failed = failed || st.failed;
    std::string section;
    Put<uint32_t>(&section, static_cast<uint32_t>(t->schema().key_kind));
    Put<uint32_t>(&section, t->schema().num_fields);
    Put<uint32_t>(&section, t->schema().max_key_bytes);
    Put<uint32_t>(&section, 0);
    Put<uint64_t>(&section, st.records);
    section += st.out;
    sections->push_back(std::move(section));
    t->snap_.reset();
  }
  if (failed) throw std::bad_alloc();
}

// -- Restore -----------------------------------------------------------------------

void RestoreSection(FeatureTable& table, const uint8_t* data, size_t size) {
  const TableSchema& schema = table.schema();
  Cursor c(data, size);
  const uint32_t kind = c.Get<uint32_t>("header");
  const uint32_t fields = c.Get<uint32_t>("header");
  const uint32_t max_key = c.Get<uint32_t>("header");
  if (c.Get<uint32_t>("header") != 0) Cursor::Fail("reserved header word is not zero");
  const uint64_t records = c.Get<uint64_t>("header");
  if (kind != static_cast<uint32_t>(schema.key_kind) || fields != schema.num_fields) {
    Cursor::Fail("key kind / field count (" + std::to_string(kind) + ", " + std::to_string(fields) +
                 ") differ from the table's (" + std::to_string(static_cast<uint32_t>(schema.key_kind)) +
                 ", " + std::to_string(schema.num_fields) + ")");
  }
  if (max_key > schema.max_key_bytes) Cursor::Fail("keys may be longer than the table's max_key_bytes");
  if (records > schema.capacity) {
    Cursor::Fail(std::to_string(records) + " records exceed the capacity " + std::to_string(schema.capacity));
  }
  if (table.Size() != 0) throw InputError("snapshot: restore needs an empty table");
  // Check every record before writing any; keep views of them for the writes.
  struct Record {
    int64_t event_ns;
    Key key;
    const uint8_t* values;
  };
  std::vector<Record> parsed;
  parsed.reserve(static_cast<size_t>(records));
  const bool str = schema.key_kind == KeyKind::kString;
  const size_t value_bytes = size_t{fields} * 8;
  std::unordered_set<std::string_view> skeys;
  std::unordered_set<int64_t> ikeys;
  for (uint64_t r = 0; r < records; ++r) {
    Record rec{c.Get<int64_t>("record event time"), Key{}, nullptr};
    bool fresh = false;
    if (str) {
      const uint32_t len = c.Get<uint32_t>("key length");
      if (len > schema.max_key_bytes) Cursor::Fail("record " + std::to_string(r) + ": key longer than max_key_bytes");
      rec.key = Key::Str(std::string_view(reinterpret_cast<const char*>(c.Bytes(len, "key")), len));
      fresh = skeys.insert(rec.key.s).second;
    } else {
      rec.key = Key::Int(c.Get<int64_t>("key"));
      fresh = ikeys.insert(rec.key.i).second;
    }
    if (!fresh) Cursor::Fail("record " + std::to_string(r) + ": duplicate key");
    rec.values = c.Bytes(value_bytes, "values");
    parsed.push_back(rec);
  }
  if (c.left() != 0) Cursor::Fail(std::to_string(c.left()) + " bytes after the last record");
  for (size_t r = 0; r < parsed.size(); ++r) {
    const uint8_t* vals = parsed[r].values;
    const TableStatus st = table.Update(parsed[r].key, parsed[r].event_ns, [&](Word* v, bool, int64_t*) {
      for (uint32_t f = 0; f < fields; ++f) {
        uint64_t word;
        std::memcpy(&word, vals + size_t{f} * 8, 8);
        StoreWord(v[f], word);
      }
      return TableStatus::kOk;
    });
    if (st != TableStatus::kOk) Cursor::Fail("record " + std::to_string(r) + " could not be stored");
  }
}

}  // namespace rtml
