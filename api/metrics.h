// Prometheus metrics (text exposition format 0.0.4): request counters and latency histograms fed by
// the server's on_request hook, and a small writer for the exposition format that /metrics also uses
// for the registry's gauges. There is no Prometheus C++ library in Debian; this file is all of it.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "api/server.h"

namespace deltastore::api {

inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

using Labels = std::vector<std::pair<std::string, std::string>>;

// Writes families in the text format: "# HELP", "# TYPE", then samples `name{labels} value`.
class PromWriter {
 public:
  // type: counter, gauge or histogram.
  void Family(const std::string& name, const std::string& type, const std::string& help);
  void Sample(const std::string& name, const Labels& labels, double value);
  const std::string& text() const { return out_; }

  static std::string EscapeLabel(std::string_view v);  // backslash, double quote and newline escaped
  static std::string FormatValue(double v);            // integers exactly, +Inf, NaN

 private:
  std::string out_;
};

class Metrics {
 public:
  // Histogram bucket bounds of the request latency, in seconds.
  static const std::vector<double>& LatencyBuckets();

  void Observe(const RequestRecord& r);  // thread-safe
  void Render(PromWriter* w) const;

 private:
  struct Latency {
    std::vector<uint64_t> buckets;  // cumulative counts are computed when rendering
    uint64_t count = 0;
    double sum = 0;
  };
  using RouteKey = std::pair<std::string, std::string>;  // method, route
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::map<RouteKey, uint64_t> bytes_in_, bytes_out_;
  std::map<RouteKey, Latency> latency_;
};

}  // namespace deltastore::api
