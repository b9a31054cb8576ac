// A minimal test harness: CHECK records a failure and continues; RTML_TEST
// registers a test; main() runs them all and exits non-zero on any failure.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace rtml_test {

struct Registry {
  std::vector<std::pair<std::string, std::function<void()>>> tests;
  int failures = 0;
  static Registry& Get() {
    static Registry r;
    return r;
  }
};

struct Register {
  Register(const char* name, std::function<void()> fn) { Registry::Get().tests.emplace_back(name, std::move(fn)); }
};

inline int RunAll() {
  auto& r = Registry::Get();
  for (auto& [name, fn] : r.tests) {
    const int before = r.failures;
    fn();
    std::printf("%s %s\n", r.failures == before ? "PASS" : "FAIL", name.c_str());
  }
  std::printf("%d tests, %d failed checks\n", static_cast<int>(r.tests.size()), r.failures);
  return r.failures == 0 ? 0 : 1;
}

}  // namespace rtml_test

#define RTML_TEST(name)                                                     \
  static void name();                                                       \
  static ::rtml_test::Register name##_registered(#name, name);              \
  static void name()

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++::rtml_test::Registry::Get().failures;                              \
    }                                                                       \
  } while (0)

#define CHECK_THROWS(expr, type)                                            \
  do {                                                                      \
    bool thrown_ = false;                                                   \
    try {                                                                   \
      (void)(expr);                                                         \
    } catch (const type&) {                                                 \
      thrown_ = true;                                                       \
    }                                                                       \
    if (!thrown_) {                                                         \
      std::printf("  %s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #type); \
      ++::rtml_test::Registry::Get().failures;                              \
    }                                                                       \
  } while (0)

#define RTML_TEST_MAIN() \
  int main() { return ::rtml_test::RunAll(); }
