// rtml's compiled model file and the structural validation every loaded or
// built Forest passes before it may score.
//
// Layout (little-endian):
//   offset 0  8 bytes  magic "RTMLFRST"
//   offset 8  u32      format version (kFormatVersion)
//   offset 12 u32      header size in bytes (32)
//   offset 16 u64      payload size in bytes
//   offset 24 u64      checksum of the payload (Hash64 below)
//   offset 32 payload  the Forest's fields in declaration order; arrays are a
//                      u64 element count followed by the elements' bytes.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "rtml/forest.h"

namespace rtml {

namespace {

constexpr char kMagic[8] = {'R', 'T', 'M', 'L', 'F', 'R', 'S', 'T'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kHeaderSize = 32;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// A 64-bit checksum with four independent lanes (about 8 bytes per cycle).
// Every round is a bijection of its lane, so any single changed byte changes
// the result.
uint64_t Hash64(const uint8_t* p, size_t n) {
  constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
  constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
  uint64_t h[4] = {kP1 + kP2, kP2, 0, ~kP1};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * k, 8);
      h[k] = Rotl(h[k] + w * kP2, 31) * kP1;
    }
  }
  uint64_t x = Rotl(h[0], 1) + Rotl(h[1], 7) + Rotl(h[2], 12) + Rotl(h[3], 18);
  for (; i < n; ++i) x = Rotl(x ^ (static_cast<uint64_t>(p[i]) * kP1), 11) * kP2;
  x ^= static_cast<uint64_t>(n);
  x ^= x >> 33;
  x *= kP2;
  x ^= x >> 29;
  x *= kP1;
  x ^= x >> 32;
  return x;
}

[[noreturn]] void Corrupt(const std::string& what) {
  throw ModelFormatError("corrupted rtml model: " + what);
}

class Writer {
 public:
  template <typename T>
  void Put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  template <typename T>
  void PutVec(const std::vector<T>& v) {
    Put<uint64_t>(v.size());
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void PutStr(const std::string& s) {
    Put<uint64_t>(s.size());
    out_.append(s);
  }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  T Get(const char* what) {
    T v;
    Take(&v, sizeof(T), what);
    return v;
  }
  template <typename T>
  std::vector<T> GetVec(const char* what) {
    const auto count = Get<uint64_t>(what);
    if (count > n_ / sizeof(T)) Corrupt(std::string("array '") + what + "' runs past the end");
    std::vector<T> v(count);
    Take(v.data(), count * sizeof(T), what);
    return v;
  }
  std::string GetStr(const char* what) {
    const auto count = Get<uint64_t>(what);
    if (count > n_) Corrupt(std::string("string '") + what + "' runs past the end");
    std::string s(reinterpret_cast<const char*>(p_), count);
    p_ += count;
    n_ -= count;
    return s;
  }
  size_t left() const { return n_; }

 private:
  void Take(void* dst, size_t bytes, const char* what) {
    if (bytes > n_) Corrupt(std::string("field '") + what + "' runs past the end");
    if (bytes > 0) std::memcpy(dst, p_, bytes);
    p_ += bytes;
    n_ -= bytes;
  }
  const uint8_t* p_;
  size_t n_;
};

bool IsLittleEndian() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

}  // namespace

// Friend of Forest: reads and writes its private fields.
class ForestCodec {
 public:
  static std::string Encode(const Forest& f) {
    Writer w;
    w.Put<int32_t>(f.num_feature_);
    w.Put<int32_t>(f.num_target_);
    w.Put<int32_t>(f.max_class_);
    w.Put<int32_t>(f.num_slots_);
    w.PutVec(f.num_class_);
    w.Put<uint8_t>(static_cast<uint8_t>(f.post_));
    w.Put<uint8_t>(static_cast<uint8_t>(f.precision_));
    w.Put<uint8_t>(static_cast<uint8_t>(f.output_kind_));
    w.Put<uint8_t>(f.average_ ? 1 : 0);
    w.Put<uint8_t>(f.flush_tiny_ ? 1 : 0);
    w.Put<uint8_t>(f.raw_sums_ ? 1 : 0);
    w.Put<double>(f.sigmoid_alpha_);
    w.Put<double>(f.ratio_c_);
    w.PutVec(f.feature_rule_);
    w.PutVec(f.known_categories_);
    w.Put<uint8_t>(f.reject_);
    w.PutVec(f.base_);
    w.PutVec(f.slot_scale_);
    w.PutVec(f.nodes_f_);
    w.PutVec(f.nodes_d_);
    w.PutVec(f.cat_bits_);
    w.PutVec(f.leaf_values_);
    w.PutVec(f.trees_);
    w.PutVec(f.chunks_);
    w.PutStr(f.metadata_);
    const std::string payload = std::move(w.str());
    Writer h;
    h.str().append(kMagic, sizeof(kMagic));
    h.Put<uint32_t>(kFormatVersion);
    h.Put<uint32_t>(kHeaderSize);
    h.Put<uint64_t>(payload.size());
    h.Put<uint64_t>(Hash64(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
    h.str().append(payload);
    return std::move(h.str());
  }

  static Forest Decode(const uint8_t* data, size_t size) {
    if (size < sizeof(kMagic) || std::memcmp(data, kMagic, sizeof(kMagic)) != 0) {
      throw ModelFormatError("not an rtml compiled model (bad magic bytes)");
    }
    if (size < kHeaderSize) {
      throw ModelFormatError("truncated rtml model: " + std::to_string(size) +
                             " bytes, the header alone is " + std::to_string(kHeaderSize));
    }
    Reader h(data + sizeof(kMagic), kHeaderSize - sizeof(kMagic));
    const auto version = h.Get<uint32_t>("version");
    const auto header_size = h.Get<uint32_t>("header size");
    const auto payload_size = h.Get<uint64_t>("payload size");
    const auto checksum = h.Get<uint64_t>("checksum");
    if (version > kFormatVersion) {
      throw ModelFormatError("rtml model format version " + std::to_string(version) +
                             " is newer than this rtml reads (" + std::to_string(kFormatVersion) +
                             "); upgrade rtml or recompile the model");
    }
    if (version == 0) Corrupt("format version 0");
    if (header_size != kHeaderSize) Corrupt("header size " + std::to_string(header_size));
    if (payload_size != size - kHeaderSize) {
      throw ModelFormatError("truncated or padded rtml model: header promises " +
                             std::to_string(payload_size) + " payload bytes, file has " +
                             std::to_string(size - kHeaderSize));
    }
    const uint8_t* payload = data + kHeaderSize;
    if (Hash64(payload, payload_size) != checksum) Corrupt("checksum mismatch");
    if (!IsLittleEndian()) throw ModelFormatError("rtml model files need a little-endian host");
    Reader r(payload, payload_size);
    Forest f;
    f.num_feature_ = r.Get<int32_t>("num_feature");
    f.num_target_ = r.Get<int32_t>("num_target");
    f.max_class_ = r.Get<int32_t>("max_class");
    f.num_slots_ = r.Get<int32_t>("num_slots");
    f.num_class_ = r.GetVec<int32_t>("num_class");
    const auto post = r.Get<uint8_t>("postprocessor");
    const auto precision = r.Get<uint8_t>("precision");
    const auto kind = r.Get<uint8_t>("output kind");
    const auto average = r.Get<uint8_t>("average");
    const auto flush = r.Get<uint8_t>("flush tiny");
    const auto raw_sums = r.Get<uint8_t>("raw sums");
    if (post > static_cast<uint8_t>(Postprocessor::kHinge)) Corrupt("postprocessor");
    if (precision > 1) Corrupt("precision");
    if (kind > static_cast<uint8_t>(OutputKind::kArgmax)) Corrupt("output kind");
    if (average > 1) Corrupt("average flag");
    if (flush > 1) Corrupt("flush flag");
    if (raw_sums > 1) Corrupt("raw sums flag");
    f.raw_sums_ = raw_sums != 0;
    f.flush_tiny_ = flush != 0;
    f.post_ = static_cast<Postprocessor>(post);
    f.precision_ = static_cast<Precision>(precision);
    f.output_kind_ = static_cast<OutputKind>(kind);
    f.average_ = average != 0;
    f.sigmoid_alpha_ = r.Get<double>("sigmoid_alpha");
    f.ratio_c_ = r.Get<double>("ratio_c");
    f.feature_rule_ = r.GetVec<uint8_t>("feature rules");
    f.known_categories_ = r.GetVec<uint32_t>("known categories");
    f.reject_ = r.Get<uint8_t>("reject flags");
    f.base_ = r.GetVec<double>("base scores");
    f.slot_scale_ = r.GetVec<double>("slot scale");
    f.nodes_f_ = r.GetVec<detail::NodeF>("nodes");
    f.nodes_d_ = r.GetVec<detail::NodeD>("float64 nodes");
    f.cat_bits_ = r.GetVec<uint32_t>("category bits");
    f.leaf_values_ = r.GetVec<double>("leaf values");
    f.trees_ = r.GetVec<detail::TreeInfo>("trees");
    f.chunks_ = r.GetVec<detail::Chunk>("chunks");
    f.metadata_ = r.GetStr("metadata");
    if (r.left() != 0) Corrupt(std::to_string(r.left()) + " unread payload bytes");
    f.Validate();
    f.Prepare();
    return f;
  }
};

void Forest::Validate() const {
  if (num_feature_ <= 0 || static_cast<uint32_t>(num_feature_) >= detail::kFeatureMask / 2) {
    Corrupt("num_feature " + std::to_string(num_feature_));
  }
  if (num_target_ < 1 || max_class_ < 1 || num_class_.size() != static_cast<size_t>(num_target_) ||
      static_cast<int64_t>(num_slots_) != static_cast<int64_t>(num_target_) * max_class_) {
    Corrupt("output shape");
  }
  for (int32_t c : num_class_) {
    if (c < 1 || c > max_class_) Corrupt("class count " + std::to_string(c));
  }
  if (output_kind_ == OutputKind::kBinaryProba && num_slots_ != 1) Corrupt("binary output shape");
  if (!feature_rule_.empty() && feature_rule_.size() != static_cast<size_t>(num_feature_)) {
    Corrupt("feature rules");
  }
  bool any_known = false;
  for (uint8_t rule : feature_rule_) {
    if (rule > kRuleKnownCategory) Corrupt("feature rule " + std::to_string(rule));
    any_known = any_known || rule == kRuleKnownCategory;
  }
  if (any_known != !known_categories_.empty() ||
      (any_known && known_categories_.size() != static_cast<size_t>(num_feature_) * 8)) {
    Corrupt("known categories");
  }
  if (reject_ > (kRejectNaN | kRejectNonFinite)) Corrupt("reject flags");
  if (base_.size() != static_cast<size_t>(num_slots_) ||
      slot_scale_.size() != static_cast<size_t>(num_slots_)) {
    Corrupt("base score count");
  }
  const size_t n = nodes_f_.size();
  if (precision_ == Precision::kFloat64 ? nodes_d_.size() != n : !nodes_d_.empty()) {
    Corrupt("float64 node count");
  }
  if (trees_.empty() || n == 0) Corrupt("no trees");
  const auto leaf_slot = static_cast<uint32_t>(num_feature_);
  // Trees occupy contiguous ranges of the node array, laid out depth-first:
  // [root, next root). One forward pass checks every index a walk can produce:
  // children lie ahead of their parent inside the tree's range, every node but
  // the root has exactly one parent (so each range is one tree), and every leaf
  // is within its chunk's depth.
  std::vector<uint32_t> roots;
  roots.reserve(trees_.size());
  for (const detail::TreeInfo& info : trees_) roots.push_back(info.root);
  std::sort(roots.begin(), roots.end());
  if (roots.empty() || roots[0] != 0 || std::adjacent_find(roots.begin(), roots.end()) != roots.end() ||
      roots.back() >= n) {
    Corrupt("tree roots");
  }
  std::vector<uint32_t> depth(n, 0);
  std::vector<uint8_t> parents(n, 0);
  uint32_t expect_begin = 0;
  for (const detail::Chunk& c : chunks_) {
    if (c.begin != expect_begin || c.end <= c.begin || c.end > trees_.size() ||
        c.end - c.begin > static_cast<uint32_t>(detail::kLanes)) {
      Corrupt("tree chunk");
    }
    expect_begin = c.end;
    for (uint32_t t = c.begin; t < c.end; ++t) {
      const detail::TreeInfo& info = trees_[t];
      if (info.leaf_len < 1 ||
          static_cast<uint64_t>(info.slot_base) +
                  static_cast<uint64_t>(info.leaf_len - 1) * info.slot_stride >=
              static_cast<uint64_t>(num_slots_)) {
        Corrupt("tree " + std::to_string(t));
      }
      const auto next_root = std::upper_bound(roots.begin(), roots.end(), info.root);
      const uint32_t end = next_root == roots.end() ? static_cast<uint32_t>(n) : *next_root;
      for (uint32_t i = info.root; i < end; ++i) {
        if (i != info.root && parents[i] != 1) Corrupt("node " + std::to_string(i) + " parents");
        const detail::NodeF& node = nodes_f_[i];
        const uint32_t feat = node.feat_flags & detail::kFeatureMask;
        const uint32_t flags = node.feat_flags & ~detail::kFeatureMask;
        const bool cat = (node.feat_flags & detail::kCategorical) != 0;
        // Flags only on categorical nodes (the no-category kernel indexes with
        // feat_flags as it is); categorical nodes read the plain feature slots.
        if ((flags != 0 && !cat) || (cat && cat_bits_.empty()) || feat > 2 * leaf_slot ||
            (cat && feat >= leaf_slot)) {
          Corrupt("node " + std::to_string(i) + " flags");
        }
        if (precision_ == Precision::kFloat64) {
          const detail::NodeD& d = nodes_d_[i];
          if (d.other != node.other || d.feat_flags != node.feat_flags ||
              ((feat == leaf_slot || cat) && detail::PayloadOf(d) != detail::PayloadOf(node))) {
            Corrupt("float64 node " + std::to_string(i) + " differs from its float32 twin");
          }
        }
        if (feat == leaf_slot) {
          if (node.other != i || flags != 0 || depth[i] > c.depth ||
              static_cast<uint64_t>(detail::PayloadOf(node)) + info.leaf_len > leaf_values_.size()) {
            Corrupt("leaf " + std::to_string(i));
          }
          continue;
        }
        if (i + 1 >= end || node.other <= i + 1 || node.other >= end || ++parents[i + 1] > 1 ||
            ++parents[node.other] > 1) {
          Corrupt("node " + std::to_string(i) + " children");
        }
        depth[i + 1] = depth[node.other] = depth[i] + 1;
        if (cat) {
          const uint32_t off = detail::PayloadOf(node);
          if (off >= cat_bits_.size() ||
              static_cast<uint64_t>(off) + 1 + cat_bits_[off] > cat_bits_.size()) {
            Corrupt("category set of node " + std::to_string(i));
          }
        }
      }
    }
  }
  if (expect_begin != trees_.size()) Corrupt("tree chunks do not cover every tree");
}

Forest Forest::FromBytes(const uint8_t* data, size_t size) { return ForestCodec::Decode(data, size); }

std::string Forest::ToBytes() const { return ForestCodec::Encode(*this); }

Forest Forest::Load(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> fp(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!fp) {
    throw ModelFormatError("cannot open '" + path + "': " + std::strerror(errno));
  }
  // One read of the whole file: its size first, then the bytes.
  std::string bytes;
  if (std::fseek(fp.get(), 0, SEEK_END) == 0) {
    const long size = std::ftell(fp.get());
    if (size > 0 && std::fseek(fp.get(), 0, SEEK_SET) == 0) bytes.resize(static_cast<size_t>(size));
  }
  size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), fp.get());
  bytes.resize(got);
  char buf[1 << 16];
  while ((got = std::fread(buf, 1, sizeof(buf), fp.get())) > 0) bytes.append(buf, got);  // grew meanwhile
  if (std::ferror(fp.get())) throw ModelFormatError("cannot read '" + path + "'");
  return FromBytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

void Forest::Save(const std::string& path) const {
  const std::string bytes = ToBytes();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::unique_ptr<FILE, int (*)(FILE*)> fp(std::fopen(tmp.c_str(), "wb"), &std::fclose);
    if (!fp) throw Error("cannot write '" + tmp + "': " + std::strerror(errno));
    if (std::fwrite(bytes.data(), 1, bytes.size(), fp.get()) != bytes.size() ||
        std::fflush(fp.get()) != 0) {
      const std::string why = std::strerror(errno);
      std::remove(tmp.c_str());
      throw Error("cannot write '" + tmp + "': " + why);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error("cannot rename '" + tmp + "' to '" + path + "': " + why);
  }
}

}  // namespace rtml
