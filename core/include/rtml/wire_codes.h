// rtml wire protocol: opcodes and status codes, declared once.
//
// These X-macro lists are the single source of the numbers in docs/protocol.md.
// C++ expands them here into enums and name tables (rtml/wire.h); the pybind11
// module expands them into rtml._core's opcode and status tables, from which
// the Cython server and the Python clients take their constants and error
// classes. Never copy a number out of this file by hand: expand the list.
//
// Each entry is X(CppName, value, WIRE_NAME). Values are stable forever once
// released; a retired code is commented out, never reused. Plain preprocessor
// definitions: no state, safe to include anywhere (also from C-compatible code).
#pragma once

// Opcodes (u16). A response echoes its request's opcode. Ranges:
//   0x0000           none (connection-level error frames only, never a request)
//   0x0001..0x000F   session        0x0010..0x001F  scoring
//   0x0020..0x002F   feature store  0x0030..0x003F  observability
//   0x0040..0x004F   admin (token required when the server has one)
//   0x0100..0x01FF   reserved: online learning (learn_one / learn_many)
//   0x0200..0x02FF   reserved: label feedback (delayed labels joined to scores)
//   0x0300..0x03FF   reserved: replication (store and model streams)
//   0xF000..0xFFFF   reserved: private / experimental, never in a release
#define RTML_OPCODES(X)               \
  X(kHello, 0x0001, HELLO)            \
  X(kPing, 0x0002, PING)              \
  X(kScore, 0x0010, SCORE)            \
  X(kScoreBatch, 0x0011, SCORE_BATCH) \
  X(kPredict, 0x0012, PREDICT)        \
  X(kGetFeatures, 0x0020, GET_FEATURES) \
  X(kPutFeatures, 0x0021, PUT_FEATURES) \
  X(kIngest, 0x0022, INGEST)          \
  X(kStats, 0x0030, STATS)            \
  X(kModelLoad, 0x0040, MODEL_LOAD)   \
  X(kModelSwap, 0x0041, MODEL_SWAP)

// Status codes (u16) carried in every response header; 0 is success. Ranges:
//   1..63     framing and protocol: the frame or stream is wrong
//   64..127   request: a well-formed frame the server cannot serve as asked
//   128..191  server state: the same request may succeed later
//   192..255  reserved
// "fatal" marks codes after which the sender closes the connection (the stream
// can no longer be trusted, or the session is refused).
#define RTML_STATUS_CODES(X)                                                  \
  X(kOk, 0, OK)                                                               \
  X(kBadMagic, 1, BAD_MAGIC)                     /* fatal */                  \
  X(kUnsupportedVersion, 2, UNSUPPORTED_VERSION) /* fatal */                  \
  X(kFrameTooLarge, 3, FRAME_TOO_LARGE)          /* fatal */                  \
  X(kUnknownOpcode, 4, UNKNOWN_OPCODE)                                        \
  X(kBadFlags, 5, BAD_FLAGS)                                                  \
  X(kMalformed, 6, MALFORMED)                                                 \
  X(kStringTooLong, 7, STRING_TOO_LONG)                                       \
  X(kTooMany, 8, TOO_MANY)                                                    \
  X(kUnauthorized, 9, UNAUTHORIZED) /* fatal */                               \
  X(kNotFound, 64, NOT_FOUND)                                                 \
  X(kBadShape, 65, BAD_SHAPE)                                                 \
  X(kBadDType, 66, BAD_DTYPE)                                                 \
  X(kBadKeyKind, 67, BAD_KEY_KIND)                                            \
  X(kBadValue, 68, BAD_VALUE)                                                 \
  X(kUnsupported, 69, UNSUPPORTED)                                            \
  X(kModelError, 70, MODEL_ERROR)                                             \
  X(kTableFull, 128, TABLE_FULL)                                              \
  X(kOverloaded, 129, OVERLOADED)                                             \
  X(kShuttingDown, 130, SHUTTING_DOWN)                                        \
  X(kInternal, 131, INTERNAL)
