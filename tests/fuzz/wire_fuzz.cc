// libFuzzer target for the wire codec: splits the input into frames and runs
// every decoder on each. Built only with -DRTML_FUZZ=ON and a compiler that
// supports -fsanitize=fuzzer (clang); the bounded in-test fuzz loop in
// tests/cpp/wire_test.cc runs everywhere else.
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DRTML_FUZZ=ON
//   cmake --build build-fuzz --target wire_fuzz && build-fuzz/wire_fuzz -max_total_time=60
#include <cstddef>
#include <cstdint>

#include "rtml/wire.h"

using namespace rtml::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Limits limits;
  limits.max_payload = 1u << 16;
  FrameSplitter splitter(data, size, limits);
  Frame f;
  Code err;
  rtml::Key keys[64];
  double fields[4096];
  while (splitter.Next(&f, &err) == SplitResult::kFrame) {
    HelloRequest hello;
    HelloResponse hello_resp;
    ScoreRequest score;
    ScoreResponse score_resp;
    PredictRequest predict;
    PredictResponse predict_resp;
    Code code;
    std::string_view message;
    (void)CheckRequestHeader(f.header);
    (void)DecodeHelloRequest(f, limits, &hello);
    (void)DecodeHelloResponse(f, limits, &hello_resp);
    (void)DecodeScoreRequest(f, limits, keys, 64, fields, 4096, &score);
    (void)DecodeScoreResponse(f, &score_resp);
    (void)DecodePredictRequest(f, limits, &predict);
    (void)DecodePredictResponse(f, &predict_resp);
    (void)DecodeError(f, &code, &message);
  }
  return 0;
}
