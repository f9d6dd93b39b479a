// GET /ui: one server-rendered HTML page for platform owners (no scripts, no external assets): the
// audit totals, savings per model and per base family as inline SVG bar charts, stored bytes over
// time, the quality of lossy versions, and every model's versions. Every user string is escaped.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/audit.h"

namespace deltastore::api {

// At most this many versions per model and this many models in the charts and tables (the JSON
// audit routes have them all).
inline constexpr size_t kUiMaxModels = 50;
inline constexpr size_t kUiMaxVersionsPerModel = 50;

std::string HtmlEscape(std::string_view s);
std::string HumanBytes(double bytes);

// `history`: audit snapshots, oldest first (Registry::RecentAuditHistory).
std::string RenderUiPage(const AuditReport& report, const std::vector<nlohmann::json>& history);

}  // namespace deltastore::api
