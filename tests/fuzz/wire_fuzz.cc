// libFuzzer target for the wire codec: splits the input into frames and runs
// every decoder on each. Built only with -DRTML_FUZZ=ON and a compiler that
// supports -fsanitize=fuzzer (clang); the bounded in-test fuzz loop in
// tests/cpp/wire_test.cc runs everywhere else.
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DRTML_FUZZ=ON
//   cmake --build build-fuzz --target wire_fuzz
//   build-fuzz/wire_fuzz -dict=tests/fuzz/wire.dict -max_total_time=60   (.ci/run: 30 s)
#include <cstddef>
#include <cstdint>

#include "rtml/wire.h"

using namespace rtml::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Limits limits;
  limits.max_payload = 1u << 16;
  limits.max_rows = 64;
  FrameSplitter splitter(data, size, limits);
  Frame f;
  Code err;
  rtml::Key keys[4096];  // max_rows * max_keys: any batch the limits allow
  double fields[4096];
  while (splitter.Next(&f, &err) == SplitResult::kFrame) {
    HelloRequest hello;
    HelloResponse hello_resp;
    ScoreRequest score;
    ScoreResponse score_resp;
    PredictRequest predict;
    PredictResponse predict_resp;
    ScoreBatchRequest batch;
    ScoreBatchResponse batch_resp;
    GetFeaturesRequest get;
    GetFeaturesResponse get_resp;
    PutFeaturesRequest put;
    PutFeaturesResponse put_resp;
    IngestRequest ingest;
    IngestResponse ingest_resp;
    ModelLoadRequest load;
    ModelSwapRequest swap;
    std::string_view text;
    Code code;
    std::string_view message;
    (void)CheckRequestHeader(f.header);
    (void)DecodeHelloRequest(f, limits, &hello);
    (void)DecodeHelloResponse(f, limits, &hello_resp);
    (void)DecodeScoreRequest(f, limits, keys, 4096, fields, 4096, &score);
    (void)DecodeScoreResponse(f, &score_resp);
    (void)DecodePredictRequest(f, limits, &predict);
    (void)DecodePredictResponse(f, &predict_resp);
    (void)DecodeScoreBatchRequest(f, limits, keys, 4096, &batch);
    (void)DecodeScoreBatchResponse(f, &batch_resp);
    (void)DecodeGetFeaturesRequest(f, limits, keys, 4096, &get);
    (void)DecodeGetFeaturesResponse(f, &get_resp);
    (void)DecodePutFeaturesRequest(f, limits, keys, 4096, &put);
    (void)DecodePutFeaturesResponse(f, &put_resp);
    (void)DecodeIngestRequest(f, limits, keys, 4096, &ingest);
    (void)DecodeIngestResponse(f, &ingest_resp);
    (void)DecodeStatsRequest(f, limits, &text);
    (void)DecodeStatsResponse(f, &text);
    (void)DecodeModelLoadRequest(f, limits, &load);
    (void)DecodeModelLoadResponse(f, limits, &text);
    (void)DecodeModelSwapRequest(f, limits, &swap);
    (void)DecodeModelSwapResponse(f, limits, &text);
    (void)DecodeError(f, &code, &message);
  }
  return 0;
}
