// Pieces of the ingest (service/ingest.cc) that its planning pass (service/ingest_plan.cc) shares.
#pragma once

#include <vector>

#include "codec/safetensors.h"
#include "service/ingest.h"

namespace deltastore::ingest_detail {

// The ingest's status when its cancellation stopped it.
Status Cancelled();
bool IsCancelled(const IngestOptions& options);
// Whether the lossy hook may take tensor `t` (see LossyFilter).
bool Takes(const IngestOptions& options, const TensorInfo& t);
// A failure of a lossy step is the ingest's cancellation when that is what stopped it.
Status LossyFailure(const IngestOptions& options, const Status& s);
bool SameLayout(const TensorEntry& base, const TensorInfo& t);

// The planning pass: offers the planner the tensors pass 2 of the ingest will offer the lossy hook, with
// the same stream numbers, then has it plan. Progress (phase "planning") starts from `p`.
Status PlanLossy(const std::vector<IngestFile>& files, VersionReader* base, const IngestOptions& options,
                 IngestProgress p, const ProgressFn& report);

}  // namespace deltastore::ingest_detail
