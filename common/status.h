// Status and StatusOr<T>: the error type every public function returns.
// Modelled on leveldb::Status and absl::StatusOr, kept deliberately small.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

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

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  Status(StatusCode code, std::string message, std::string reason)
      : code_(code), message_(std::move(message)), reason_(std::move(reason)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // A machine-readable reason more specific than the code ("DIGEST_INVALID"); empty when none.
  const std::string& reason() const { return reason_; }
  std::string ToString() const;

  // Prefixes the message with context, keeping the code ("reading x: <message>").
  Status Annotate(std::string_view context) const;

  bool operator==(const Status& other) const = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string reason_;
};

inline Status OkStatus() {
  return Status();
}
inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) {
  return {StatusCode::kNotFound, std::move(m)};
}
inline Status AlreadyExists(std::string m) {
  return {StatusCode::kAlreadyExists, std::move(m)};
}
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status OutOfRange(std::string m) {
  return {StatusCode::kOutOfRange, std::move(m)};
}
inline Status Corruption(std::string m) {
  return {StatusCode::kCorruption, std::move(m)};
}
inline Status DataLoss(std::string m) {
  return {StatusCode::kDataLoss, std::move(m)};
}
inline Status IOError(std::string m) {
  return {StatusCode::kIOError, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status Unavailable(std::string m) {
  return {StatusCode::kUnavailable, std::move(m)};
}
inline Status Unimplemented(std::string m) {
  return {StatusCode::kUnimplemented, std::move(m)};
}
inline Status Internal(std::string m) {
  return {StatusCode::kInternal, std::move(m)};
}
inline Status Unauthenticated(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m), "UNAUTHORIZED"};
}
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m), "DENIED"};
}

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
