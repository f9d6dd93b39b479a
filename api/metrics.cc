#include "api/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace deltastore::api {

namespace {

// Methods outside the HTTP set are counted together: a label per invented method would let clients
// grow the series without bound.
std::string MethodLabel(const std::string& m) {
  for (const char* k : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (m == k) return m;
  }
  return "OTHER";
}

}  // namespace

std::string PromWriter::EscapeLabel(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string PromWriter::FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  for (int precision = 15; precision <= 17; ++precision) {  // the shortest form that reads back
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void PromWriter::Family(const std::string& name, const std::string& type, const std::string& help) {
  out_ += "# HELP " + name + " " + help + "\n";
  out_ += "# TYPE " + name + " " + type + "\n";
}

void PromWriter::Sample(const std::string& name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ',';
      out_ += labels[i].first + "=\"" + EscapeLabel(labels[i].second) + "\"";
    }
    out_ += '}';
  }
  out_ += ' ' + FormatValue(value) + '\n';
}

const std::vector<double>& Metrics::LatencyBuckets() {
  static const std::vector<double> kBuckets = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1,     2.5,  5,     10,   30,  60};
  return kBuckets;
}

void Metrics::Observe(const RequestRecord& r) {
  std::string method = MethodLabel(r.method);
  std::lock_guard<std::mutex> lock(mu_);
  requests_[{method, r.route, r.status}]++;
  RouteKey key{method, r.route};
  bytes_in_[key] += r.bytes_in;
  bytes_out_[key] += r.bytes_out;
  Latency& l = latency_[key];
  const auto& bounds = LatencyBuckets();
  if (l.buckets.empty()) l.buckets.assign(bounds.size(), 0);
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (r.seconds <= bounds[i]) {
      l.buckets[i]++;
      break;
    }
  }
  l.count++;
  l.sum += r.seconds;
}

void Metrics::Render(PromWriter* w) const {
  std::lock_guard<std::mutex> lock(mu_);
  w->Family("deltastore_http_requests_total", "counter",
            "HTTP requests answered, by method, route and status.");
  for (const auto& [k, n] : requests_) {
    const auto& [method, route, status] = k;
    w->Sample("deltastore_http_requests_total",
              {{"method", method}, {"route", route}, {"status", std::to_string(status)}}, double(n));
  }
  w->Family("deltastore_http_request_body_bytes_total", "counter", "Request body bytes received.");
  for (const auto& [k, n] : bytes_in_)
    w->Sample("deltastore_http_request_body_bytes_total", {{"method", k.first}, {"route", k.second}},
              double(n));
  w->Family("deltastore_http_response_body_bytes_total", "counter", "Response body bytes sent.");
  for (const auto& [k, n] : bytes_out_)
    w->Sample("deltastore_http_response_body_bytes_total", {{"method", k.first}, {"route", k.second}},
              double(n));
  w->Family("deltastore_http_request_duration_seconds", "histogram",
            "Time from a request's header to its response written.");
  const auto& bounds = LatencyBuckets();
  for (const auto& [k, l] : latency_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds.size(); ++i) {
      cumulative += l.buckets[i];
      w->Sample("deltastore_http_request_duration_seconds_bucket",
                {{"method", k.first}, {"route", k.second}, {"le", PromWriter::FormatValue(bounds[i])}},
                double(cumulative));
    }
    w->Sample("deltastore_http_request_duration_seconds_bucket",
              {{"method", k.first}, {"route", k.second}, {"le", "+Inf"}}, double(l.count));
    w->Sample("deltastore_http_request_duration_seconds_sum", {{"method", k.first}, {"route", k.second}},
              l.sum);
    w->Sample("deltastore_http_request_duration_seconds_count", {{"method", k.first}, {"route", k.second}},
              double(l.count));
  }
}

}  // namespace deltastore::api
