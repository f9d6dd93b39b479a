// The one error vocabulary: every reason a request or a job can fail for, each with its wire code, the
// StatusCode it belongs to and the HTTP status it answers with. This table is the only place that
// defines them; common/status.h generates one named factory per row (`ModelUnknown("…")`), and the API
// turns a Status into a response by looking its reason up here. Nothing branches on message text.
//
// The first rows are the generic reason of each StatusCode (what `Status(code, message)` carries).
// Add a specific row when clients need to tell a fault apart (each wire code appears once);
// docs/http_api.md lists them all.
#pragma once

// X(Factory, "WIRE_CODE", StatusCode, http status)
#define DS_ERROR_REASONS(X)                                                                                  \
  /* generic: one per StatusCode */                                                                          \
  X(InvalidArgument, "INVALID_ARGUMENT", kInvalidArgument, 400)                                              \
  X(NotFound, "NOT_FOUND", kNotFound, 404)                                                                   \
  X(AlreadyExists, "ALREADY_EXISTS", kAlreadyExists, 409)                                                    \
  X(FailedPrecondition, "FAILED_PRECONDITION", kFailedPrecondition, 409)                                     \
  X(OutOfRange, "OUT_OF_RANGE", kOutOfRange, 416)                                                            \
  X(Corruption, "CORRUPTION", kCorruption, 500)                                                              \
  X(DataLoss, "DATA_LOSS", kDataLoss, 500)                                                                   \
  X(IOError, "IO_ERROR", kIOError, 500)                                                                      \
  X(ResourceExhausted, "RESOURCE_EXHAUSTED", kResourceExhausted, 429)                                        \
  X(Unavailable, "UNAVAILABLE", kUnavailable, 503)                                                           \
  X(Unimplemented, "UNIMPLEMENTED", kUnimplemented, 501)                                                     \
  X(Internal, "INTERNAL", kInternal, 500)                                                                    \
  X(Unauthenticated, "UNAUTHORIZED", kUnauthenticated, 401)                                                  \
  X(PermissionDenied, "DENIED", kPermissionDenied, 403)                                                      \
  /* requests */                                                                                             \
  X(BadRequest, "BAD_REQUEST", kInvalidArgument, 400)       /* target, query or header malformed */          \
  X(BodyInvalid, "BODY_INVALID", kInvalidArgument, 400)     /* JSON body malformed or of wrong shape */      \
  X(NameInvalid, "NAME_INVALID", kInvalidArgument, 400)     /* model, tag or file name */                    \
  X(DigestInvalid, "DIGEST_INVALID", kInvalidArgument, 400) /* malformed, or not the bytes' digest */        \
  X(MethodNotAllowed, "METHOD_NOT_ALLOWED", kInvalidArgument, 405)                                           \
  X(PayloadTooLarge, "PAYLOAD_TOO_LARGE", kResourceExhausted, 413)                                           \
  X(RangeInvalid, "RANGE_INVALID", kOutOfRange, 416)                /* upload Content-Range vs its offset */ \
  X(RangeNotSatisfiable, "RANGE_NOT_SATISFIABLE", kOutOfRange, 416) /* download Range */                     \
  X(ContentRangeMismatch, "CONTENT_RANGE_MISMATCH", kInvalidArgument, 400) /* body length differs */         \
  X(ConnectionLost, "CONNECTION_LOST", kIOError, 400) /* the client went away: never answered */             \
  /* uploads */                                                                                              \
  X(UploadUnknown, "BLOB_UPLOAD_UNKNOWN", kNotFound, 404)                                                    \
  X(UploadSealed, "UPLOAD_SEALED", kFailedPrecondition, 409)                                                 \
  X(UploadBusy, "UPLOAD_BUSY", kFailedPrecondition, 409)                                                     \
  X(UploadNotSealed, "UPLOAD_NOT_SEALED", kFailedPrecondition, 409)                                          \
  X(TooManyUploads, "TOO_MANY_UPLOADS", kResourceExhausted, 429)                                             \
  X(DiskFull, "DISK_FULL", kResourceExhausted, 507)                                                          \
  /* checkpoints and policies */                                                                             \
  X(SafetensorsInvalid, "SAFETENSORS_INVALID", kInvalidArgument, 400)                                        \
  X(TooManyTensors, "TOO_MANY_TENSORS", kInvalidArgument, 400)                                               \
  X(BaseMismatch, "BASE_MISMATCH", kInvalidArgument, 400)                                                    \
  X(PolicyInvalid, "POLICY_INVALID", kInvalidArgument, 400)                                                  \
  X(CalibrationInvalid, "CALIBRATION_INVALID", kInvalidArgument, 400)                                        \
  X(NonfiniteWeights, "NONFINITE_WEIGHTS", kInvalidArgument, 400)                                            \
  X(RatioUnreachable, "RATIO_UNREACHABLE", kInvalidArgument, 400)                                            \
  /* the catalog */                                                                                          \
  X(ModelUnknown, "MODEL_UNKNOWN", kNotFound, 404)                                                           \
  X(VersionUnknown, "VERSION_UNKNOWN", kNotFound, 404)                                                       \
  X(TagUnknown, "TAG_UNKNOWN", kNotFound, 404)                                                               \
  X(FileUnknown, "FILE_UNKNOWN", kNotFound, 404)                                                             \
  X(JobUnknown, "JOB_UNKNOWN", kNotFound, 404)                                                               \
  X(JobCancelled, "JOB_CANCELLED", kFailedPrecondition, 409) /* a failed job's error: DELETE asked it */     \
  X(JobFinished, "JOB_FINISHED", kFailedPrecondition, 409)   /* DELETE of a job that ended otherwise */      \
  X(TokenUnknown, "TOKEN_UNKNOWN", kNotFound, 404)                                                           \
  X(VersionInUse, "VERSION_IN_USE", kFailedPrecondition, 409)                                                \
  X(BaseDeleted, "BASE_DELETED", kFailedPrecondition, 409)                                                   \
  /* the Hugging Face routes (api/hf_routes.h; the X-Error-Code header tells huggingface_hub) */             \
  X(RepoUnknown, "REPO_UNKNOWN", kNotFound, 404)                                                             \
  X(RevisionUnknown, "REVISION_UNKNOWN", kNotFound, 404)                                                     \
  X(EntryUnknown, "ENTRY_UNKNOWN", kNotFound, 404)                                                           \
  X(PathInvalid, "PATH_INVALID", kInvalidArgument, 400)                                                      \
  /* per-tensor downloads */                                                                                 \
  X(TensorUnknown, "TENSOR_UNKNOWN", kInvalidArgument, 400)                                                  \
  X(TensorsInvalid, "TENSORS_INVALID", kInvalidArgument, 400)                                                \
  /* the store */                                                                                            \
  X(SchemaTooNew, "SCHEMA_TOO_NEW", kFailedPrecondition, 500)                                                \
  X(CommitConflict, "COMMIT_CONFLICT", kFailedPrecondition, 409) /* another writer changed it first */       \
  X(StoreUnavailable, "STORE_UNAVAILABLE", kUnavailable, 503)    /* the S3 or PostgreSQL server */           \
  X(JobLeaseLost, "JOB_LEASE_LOST", kUnavailable, 503)           /* another node took the job over */
