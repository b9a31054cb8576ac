// rtml::Scorer (see rtml/scorer.h for the contract).
#include "rtml/scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "../common/bits.h"

namespace rtml {

using internal::Mix64;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Stable across processes and versions: routing must not move between runs.
uint64_t RouteHash(const Key& k) {
  if (!k.is_string) return Mix64(static_cast<uint64_t>(k.i) ^ 0xA0761D6478BD642FULL);
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : k.s) h = (h ^ c) * 0x100000001B3ULL;
  return Mix64(h);
}

// Per-thread buffers for one request (allocation only on a thread's first
// call or when a larger scorer appears).
struct Scratch {
  std::vector<double> row, age, values, shadow;
  std::vector<uint8_t> missing;
  std::vector<int32_t> arm;
};
thread_local Scratch tls_scratch;

// Predict, unless x holds an input the model's native library refuses.
Status CheckedPredict(const Forest& model, const MatrixView& x, double* out) noexcept {
  int64_t bad_row = 0, bad_col = 0;
  if (model.rejects() != 0 && model.FindRejected(x, &bad_row, &bad_col)) return Status::kBadShape;
  return model.Predict(x, out, false, 1);
}

}  // namespace

Scorer::Scorer(ScorerPlan plan, ScorerConfig config) : plan_(std::move(plan)) {
  if (plan_.inputs.empty()) throw InputError("a scorer needs at least one input");
  for (size_t f = 0; f < plan_.inputs.size(); ++f) {
    const InputSource& in = plan_.inputs[f];
    const std::string where = "input " + std::to_string(f) + ": ";
    if (in.kind == InputSource::Kind::kRequest) {
      if (in.source >= plan_.num_fields) throw InputError(where + "request field index out of range");
      continue;
    }
    if (in.key >= plan_.keys.size()) throw InputError(where + "key index out of range");
    const bool table = in.kind == InputSource::Kind::kTable;
    if (table && (in.source >= plan_.tables.size() || in.column >= plan_.tables[in.source]->schema().num_fields)) {
      throw InputError(where + "table or field index out of range");
    }
    if (!table && (in.source >= plan_.windows.size() || in.column >= plan_.windows[in.source]->num_columns())) {
      throw InputError(where + "window set or column index out of range");
    }
    const KeyKind kind = table ? plan_.tables[in.source]->schema().key_kind
                               : plan_.windows[in.source]->spec().key_kind;
    if (kind != plan_.keys[in.key]) throw InputError(where + "the key's type differs from the source's key type");
    Group* g = nullptr;
    for (auto& existing : groups_) {
      if (existing.kind == in.kind && existing.source == in.source && existing.key == in.key) g = &existing;
    }
    if (g == nullptr) {
      groups_.push_back(Group{in.kind, in.source, in.key, {}});
      g = &groups_.back();
      scratch_size_ = std::max<size_t>(
          scratch_size_, table ? plan_.tables[in.source]->schema().num_fields : plan_.windows[in.source]->num_columns());
    }
    g->columns.emplace_back(in.column, static_cast<uint32_t>(f));
  }
  Validate(config);
  num_outputs_ = config.arms[0].model->num_columns(false);
  current_.store(new ScorerConfig(std::move(config)), std::memory_order_release);
}

Scorer::~Scorer() { delete current_.load(std::memory_order_acquire); }

void Scorer::Validate(const ScorerConfig& c) const {
  if (c.arms.empty()) throw InputError("a scorer needs a model");
  const int32_t nf = num_features();
  double last = 0.0;
  for (const auto& arm : c.arms) {
    if (!arm.model) throw InputError("arm '" + arm.name + "' has no model");
    if (arm.model->num_features() != nf) {
      throw InputError("model '" + arm.version + "' takes " + std::to_string(arm.model->num_features()) +
                       " features; the scorer assembles " + std::to_string(nf));
    }
    if (arm.model->num_columns(false) != c.arms[0].model->num_columns(false)) {
      throw InputError("model '" + arm.version + "' returns " + std::to_string(arm.model->num_columns(false)) +
                       " outputs; the other arms return " + std::to_string(c.arms[0].model->num_columns(false)));
    }
    if (!(arm.cumulative > last) || arm.cumulative > 1.0) {
      throw InputError("arm weights must be positive and sum to 1");
    }
    last = arm.cumulative;
  }
  if (std::fabs(last - 1.0) > 1e-9) throw InputError("arm weights must sum to 1");
  if (num_outputs_ != 0 && c.arms[0].model->num_columns(false) != num_outputs_) {
    throw InputError("a new model must return the same number of outputs (" + std::to_string(num_outputs_) + ")");
  }
  if (c.shadow && c.shadow->num_features() != nf) {
    throw InputError("shadow model '" + c.shadow_version + "' takes " + std::to_string(c.shadow->num_features()) +
                     " features; the scorer assembles " + std::to_string(nf));
  }
  if (c.shadow && c.shadow->num_columns(false) != c.arms[0].model->num_columns(false)) {
    throw InputError("shadow model '" + c.shadow_version + "' must return as many outputs as the primary");
  }
  if (c.arms.size() > 1 && c.route_key >= plan_.keys.size()) {
    throw InputError("A/B routing needs a request key; the scorer has none");
  }
}

const ScorerConfig* Scorer::Enter(uint64_t* parity) const noexcept {
  // seq_cst: ordered with SetConfig's publication and epoch flips (see header).
  *parity = epoch_.load(std::memory_order_seq_cst) & 1;
  readers_[*parity].n.fetch_add(1, std::memory_order_seq_cst);
  return current_.load(std::memory_order_seq_cst);
}

void Scorer::Leave(uint64_t parity) const noexcept {
  // Release pairs with SetConfig's acquire wait: this reader is done with it.
  readers_[parity].n.fetch_sub(1, std::memory_order_release);
}

void Scorer::SetConfig(ScorerConfig config) {
  std::lock_guard<std::mutex> lock(set_mu_);
  Validate(config);
  const ScorerConfig* old = current_.exchange(new ScorerConfig(std::move(config)), std::memory_order_seq_cst);
  // Readers that may hold old entered before the exchange, counted under
  // either parity. Flip, drain the previous parity, twice: new readers go to
  // the other counter, so each wait ends even under a steady stream.
  for (int round = 0; round < 2; ++round) {
    const uint64_t prev = epoch_.fetch_add(1, std::memory_order_seq_cst) & 1;
    // Acquire pairs with Leave's release.
    while (readers_[prev].n.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }
  delete old;
}

ScorerConfig Scorer::config() const {
  uint64_t parity = 0;
  const ScorerConfig* c = Enter(&parity);
  ScorerConfig copy = *c;
  Leave(parity);
  return copy;
}

void Scorer::Gather(const Key* keys, const double* fields, int64_t now_ns, double* row, uint8_t* missing,
                    double* age_s, double* scratch) const noexcept {
  const size_t nf = plan_.inputs.size();
  for (size_t f = 0; f < nf; ++f) {
    const InputSource& in = plan_.inputs[f];
    missing[f] = 0;
    if (age_s != nullptr) age_s[f] = kNaN;
    if (in.kind == InputSource::Kind::kRequest) row[f] = fields[in.source];
  }
  for (const Group& g : groups_) {
    int64_t event_ns = 0;
    TableStatus st;
    if (g.kind == InputSource::Kind::kTable) {
      st = plan_.tables[g.source]->Get(keys[g.key], now_ns, scratch, &event_ns);
    } else {
      st = plan_.windows[g.source]->Query(keys[g.key], now_ns, scratch);
    }
    const bool found = st == TableStatus::kOk;
    for (const auto& [column, f] : g.columns) {
      if (g.kind == InputSource::Kind::kTable) {
        row[f] = found ? scratch[column] : kNaN;
        missing[f] = found ? 0 : 1;
        if (age_s != nullptr && found) age_s[f] = (static_cast<double>(now_ns) - static_cast<double>(event_ns)) * 1e-9;
      } else {
        // Windows always answer (an unknown entity has empty windows); NaN
        // marks what has no value (mean of nothing, a bucket no longer held).
        row[f] = scratch[column];
        missing[f] = std::isnan(scratch[column]) ? 1 : 0;
      }
    }
  }
}

void Scorer::Prefetch(const Key* keys, int64_t now_ns) const noexcept {
  for (const Group& g : groups_) {
    if (g.kind == InputSource::Kind::kTable) {
      plan_.tables[g.source]->Prefetch(keys[g.key], 0, 256);
    } else {
      plan_.windows[g.source]->Prefetch(keys[g.key], now_ns);
    }
  }
}

int32_t Scorer::Route(const ScorerConfig& c, const Key* keys) const noexcept {
  if (c.arms.size() == 1) return 0;
  const double u = static_cast<double>(RouteHash(keys[c.route_key]) >> 11) * 0x1.0p-53;
  for (size_t a = 0; a < c.arms.size(); ++a) {
    if (u < c.arms[a].cumulative) return static_cast<int32_t>(a);
  }
  return static_cast<int32_t>(c.arms.size() - 1);
}

Status Scorer::Score(const Key* keys, const double* fields, int64_t now_ns, double* out, ScoreTrace* trace,
                     ScoreObserver* observer) const noexcept {
  const int64_t t0 = observer != nullptr ? NowNs() : 0;
  const size_t nf = plan_.inputs.size();
  Scratch& s = tls_scratch;
  if (s.row.size() < nf) {
    s.row.resize(nf);
    s.age.resize(nf);
    s.missing.resize(nf);
  }
  if (s.values.size() < scratch_size_) s.values.resize(scratch_size_);
  if (s.shadow.size() < static_cast<size_t>(num_outputs_)) s.shadow.resize(static_cast<size_t>(num_outputs_));
  double* row = trace != nullptr && trace->row != nullptr ? trace->row : s.row.data();
  double* age = trace != nullptr && trace->age_s != nullptr ? trace->age_s : s.age.data();
  Gather(keys, fields, now_ns, row, s.missing.data(), age, s.values.data());
  uint64_t parity = 0;
  const ScorerConfig* c = Enter(&parity);
  const int32_t arm = Route(*c, keys);
  const Forest& model = *c->arms[static_cast<size_t>(arm)].model;
  const MatrixView x{row, 1, static_cast<int64_t>(nf), static_cast<int64_t>(nf), 1, DType::kFloat64};
  const Status st = CheckedPredict(model, x, out);
  const double* shadow_out = nullptr;
  if (st == Status::kOk && c->shadow && CheckedPredict(*c->shadow, x, s.shadow.data()) == Status::kOk) {
    shadow_out = s.shadow.data();
  }
  Leave(parity);
  if (trace != nullptr) {
    trace->arm = arm;
    trace->shadow = shadow_out != nullptr ? shadow_out[0] : kNaN;
    if (trace->found != nullptr) {
      for (size_t f = 0; f < nf; ++f) trace->found[f] = s.missing[f] ? 0 : 1;
    }
  }
  if (observer != nullptr) {
    if (st == Status::kOk) observer->OnRow(keys, now_ns, arm, row, s.missing.data(), age, out, shadow_out);
    observer->OnCall(false, 1, NowNs() - t0, st != Status::kOk);
  }
  return st;
}

Status Scorer::ScoreMany(const Key* keys, const double* fields, size_t n, int64_t now_ns, double* out,
                         int32_t* arms, ScoreObserver* observer) const noexcept {
  const int64_t t0 = observer != nullptr ? NowNs() : 0;
  const size_t nk = plan_.keys.size();
  const size_t nfields = plan_.num_fields;
  const size_t nout = static_cast<size_t>(num_outputs_);
  Status first = Status::kOk;
  uint64_t parity = 0;
  const ScorerConfig* c = Enter(&parity);
  Scratch& s = tls_scratch;
  const size_t nf = plan_.inputs.size();
  // Rows are gathered into blocks and each block scored with one batch call,
  // so the model's batch kernel runs; rows are grouped per arm for A/B.
  constexpr size_t kBlock = 256;
  constexpr size_t kAhead = 4;
  if (s.row.size() < kBlock * nf) s.row.resize(kBlock * nf);
  if (s.missing.size() < kBlock * nf) s.missing.resize(kBlock * nf);
  if (s.age.size() < kBlock * nf) s.age.resize(kBlock * nf);
  if (s.values.size() < scratch_size_) s.values.resize(scratch_size_);
  if (s.shadow.size() < kBlock * nout) s.shadow.resize(kBlock * nout);
  if (s.arm.size() < kBlock) s.arm.resize(kBlock);
  int32_t* block_arm = s.arm.data();
  for (size_t b0 = 0; b0 < n; b0 += kBlock) {
    const size_t m = std::min(kBlock, n - b0);
    for (size_t i = 0; i < m; ++i) {
      const size_t r = b0 + i;
      // Lookups of a later row are hinted now, so their cache misses overlap
      // this row's work instead of each stalling in turn.
      if (r + kAhead < n) Prefetch(keys + (r + kAhead) * nk, now_ns);
      Gather(keys + r * nk, fields + r * nfields, now_ns, s.row.data() + i * nf, s.missing.data() + i * nf,
             observer != nullptr ? s.age.data() + i * nf : nullptr, s.values.data());
      block_arm[i] = Route(*c, keys + r * nk);
      if (arms != nullptr) arms[r] = block_arm[i];
    }
    for (size_t a = 0; a < c->arms.size(); ++a) {
      const Forest& model = *c->arms[a].model;
      // Rows of this arm, scored one contiguous run at a time.
      for (size_t i = 0; i < m;) {
        if (block_arm[i] != static_cast<int32_t>(a)) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < m && block_arm[j] == static_cast<int32_t>(a)) ++j;
        const MatrixView x{s.row.data() + i * nf, static_cast<int64_t>(j - i), static_cast<int64_t>(nf),
                           static_cast<int64_t>(nf), 1, DType::kFloat64};
        const Status st = CheckedPredict(model, x, out + (b0 + i) * nout);
        if (st != Status::kOk) std::fill(out + (b0 + i) * nout, out + (b0 + j) * nout, kNaN);
        if (st != Status::kOk && first == Status::kOk) first = st;
        i = j;
      }
    }
    const double* shadow = nullptr;
    if (c->shadow) {
      const MatrixView x{s.row.data(), static_cast<int64_t>(m), static_cast<int64_t>(nf), static_cast<int64_t>(nf),
                         1, DType::kFloat64};
      if (CheckedPredict(*c->shadow, x, s.shadow.data()) == Status::kOk) shadow = s.shadow.data();
    }
    if (observer != nullptr) {
      for (size_t i = 0; i < m; ++i) {
        observer->OnRow(keys + (b0 + i) * nk, now_ns, block_arm[i], s.row.data() + i * nf, s.missing.data() + i * nf, s.age.data() + i * nf,
                        out + (b0 + i) * nout,
                        shadow != nullptr ? shadow + i * nout : nullptr);
      }
    }
  }
  Leave(parity);
  if (observer != nullptr) observer->OnCall(true, n, NowNs() - t0, first != Status::kOk);
  return first;
}

}  // namespace rtml
