#include "common/status.h"

#include <iterator>

namespace deltastore {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kCorruption: return "CORRUPTION";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kIOError: return "IO_ERROR";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

const ReasonInfo& Describe(Reason reason) {
  static const ReasonInfo kTable[] = {{"OK", StatusCode::kOk, 200},
#define DS_REASON_ROW(factory, wire, code, http) {wire, StatusCode::code, http},
                                      DS_ERROR_REASONS(DS_REASON_ROW)
#undef DS_REASON_ROW
  };
  auto i = static_cast<size_t>(reason);
  return i < std::size(kTable) ? kTable[i] : kTable[static_cast<size_t>(Reason::kInternal)];
}

Reason GenericReason(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return Reason::kNone;
    case StatusCode::kInvalidArgument: return Reason::kInvalidArgument;
    case StatusCode::kNotFound: return Reason::kNotFound;
    case StatusCode::kAlreadyExists: return Reason::kAlreadyExists;
    case StatusCode::kFailedPrecondition: return Reason::kFailedPrecondition;
    case StatusCode::kOutOfRange: return Reason::kOutOfRange;
    case StatusCode::kCorruption: return Reason::kCorruption;
    case StatusCode::kDataLoss: return Reason::kDataLoss;
    case StatusCode::kIOError: return Reason::kIOError;
    case StatusCode::kResourceExhausted: return Reason::kResourceExhausted;
    case StatusCode::kUnavailable: return Reason::kUnavailable;
    case StatusCode::kUnimplemented: return Reason::kUnimplemented;
    case StatusCode::kInternal: return Reason::kInternal;
    case StatusCode::kUnauthenticated: return Reason::kUnauthenticated;
    case StatusCode::kPermissionDenied: return Reason::kPermissionDenied;
  }
  return Reason::kInternal;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code()));
  out += ": ";
  out += message_;
  return out;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(reason_, std::move(m));
}

}  // namespace deltastore
