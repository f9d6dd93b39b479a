// Status and StatusOr<T>: the error type every public function returns.
// Modelled on leveldb::Status and absl::StatusOr, kept deliberately small.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/errors.h"

namespace deltastore {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad input from the caller (400)
  kNotFound,            // unknown model, version, chunk, upload (404)
  kAlreadyExists,       // (409)
  kFailedPrecondition,  // state does not allow it (409)
  kOutOfRange,          // range/offset outside the object (416)
  kCorruption,          // stored bytes fail verification (500, never served)
  kDataLoss,            // unrecoverable loss (500)
  kIOError,             // filesystem / RocksDB failure (500)
  kResourceExhausted,   // limits, disk full (413/507)
  kUnavailable,         // shutting down, try later (503)
  kUnimplemented,       // (501)
  kInternal,            // a bug (500)
  kUnauthenticated,     // no or unknown credentials (401)
  kPermissionDenied,    // credentials lack the scope (403)
};

std::string_view StatusCodeName(StatusCode code);

// Every reason of common/errors.h, as an enum (kNone for ok).
enum class Reason : uint8_t {
  kNone = 0,
#define DS_REASON_ENUM(factory, wire, code, http) k##factory,
  DS_ERROR_REASONS(DS_REASON_ENUM)
#undef DS_REASON_ENUM
};

// A reason's row of the table: its wire code, StatusCode and HTTP status.
struct ReasonInfo {
  std::string_view wire;
  StatusCode code;
  int http;
};
const ReasonInfo& Describe(Reason reason);
// The generic reason of a StatusCode (the first rows of the table).
Reason GenericReason(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Reason reason, std::string message) : reason_(reason), message_(std::move(message)) {}
  // The generic reason of `code`.
  Status(StatusCode code, std::string message) : Status(GenericReason(code), std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return reason_ == Reason::kNone; }
  StatusCode code() const { return ok() ? StatusCode::kOk : Describe(reason_).code; }
  Reason reason() const { return reason_; }
  // The wire code clients see ("DIGEST_INVALID"); empty when ok.
  std::string_view wire_code() const { return ok() ? std::string_view() : Describe(reason_).wire; }
  // The HTTP status the reason answers with (200 when ok).
  int http_status() const { return ok() ? 200 : Describe(reason_).http; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Prefixes the message with context, keeping the reason ("reading x: <message>").
  Status Annotate(std::string_view context) const;

  bool operator==(const Status& other) const = default;

 private:
  Reason reason_ = Reason::kNone;
  std::string message_;
};

inline Status OkStatus() {
  return Status();
}

// One named factory per reason: `NameInvalid("invalid model name 'x'")`.
#define DS_REASON_FACTORY(factory, wire, code, http)       \
  inline Status factory(std::string message) {             \
    return Status(Reason::k##factory, std::move(message)); \
  }
DS_ERROR_REASONS(DS_REASON_FACTORY)
#undef DS_REASON_FACTORY

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : value_(status) { assert(!status.ok()); }                          // NOLINT
  StatusOr(Status&& status) : value_(std::move(status)) { assert(!std::get<Status>(value_).ok()); }  // NOLINT
  StatusOr(const T& value) : value_(value) {}                                                        // NOLINT
  StatusOr(T&& value) : value_(std::move(value)) {}                                                  // NOLINT

  bool ok() const { return std::holds_alternative<T>(value_); }
  Status status() const { return ok() ? Status() : std::get<Status>(value_); }

  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> value_;
};

}  // namespace deltastore

#define DS_CONCAT_INNER(a, b) a##b
#define DS_CONCAT(a, b) DS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (a Status) is not ok.
#define DS_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::deltastore::Status ds_status_ = (expr); \
    if (!ds_status_.ok()) return ds_status_;  \
  } while (0)

// `DS_ASSIGN_OR_RETURN(auto x, F())` assigns the value of a StatusOr or returns its error.
#define DS_ASSIGN_OR_RETURN(lhs, expr) DS_ASSIGN_OR_RETURN_IMPL(DS_CONCAT(ds_statusor_, __LINE__), lhs, expr)
#define DS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
