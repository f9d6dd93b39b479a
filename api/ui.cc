#include "api/ui.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace deltastore::api {

using json = nlohmann::json;

namespace {

constexpr char kStoredColor[] = "#3b4252";
constexpr char kDedupColor[] = "#1f77b4";
constexpr char kLosslessColor[] = "#2ca02c";
constexpr char kLossyColor[] = "#ff7f0e";

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

std::string Num(double v) {
  return Fmt("%.1f", v);
}

std::string Ratio(uint64_t logical, uint64_t stored) {
  if (stored == 0) return logical == 0 ? "-" : "&infin;";
  return Fmt("%.2f", double(logical) / double(stored)) + "&times;";
}

std::string ShortDigest(const Digest& d) {
  return d.Hex().substr(0, 12);
}

double Clamp0(int64_t v) {
  return v < 0 ? 0.0 : double(v);
}

struct BarRow {
  std::string label;  // escaped already
  AuditFigures f;
};

// Horizontal stacked bars: stored | saved by dedup | by the lossless codec | by lossy compression; the
// whole bar is the logical size.
std::string SavingsChart(const std::vector<BarRow>& rows, const std::string& title) {
  const double label_w = 230, bar_w = 560, text_w = 300, row_h = 30, top = 8;
  double max_total = 1;
  for (const auto& r : rows) {
    double total = double(r.f.stored_bytes) + double(r.f.saved_dedup_bytes) +
                   Clamp0(r.f.saved_lossless_bytes) + Clamp0(r.f.saved_lossy_bytes);
    max_total = std::max(max_total, total);
  }
  double height = top + row_h * double(rows.size()) + 8;
  std::string s = "<svg class=\"chart\" role=\"img\" width=\"" + Num(label_w + bar_w + text_w) +
                  "\" height=\"" + Num(height) + "\" viewBox=\"0 0 " + Num(label_w + bar_w + text_w) + " " +
                  Num(height) + "\"><title>" + title + "</title>";
  double y = top;
  for (const auto& r : rows) {
    s += "<text x=\"" + Num(label_w - 8) + "\" y=\"" + Num(y + 19) + "\" text-anchor=\"end\">" + r.label +
         "</text>";
    s += "<rect x=\"" + Num(label_w) + "\" y=\"" + Num(y + 4) + "\" width=\"" + Num(bar_w) +
         "\" height=\"22\" fill=\"#eceff4\"/>";
    double x = label_w;
    const std::pair<double, const char*> parts[] = {{double(r.f.stored_bytes), kStoredColor},
                                                    {double(r.f.saved_dedup_bytes), kDedupColor},
                                                    {Clamp0(r.f.saved_lossless_bytes), kLosslessColor},
                                                    {Clamp0(r.f.saved_lossy_bytes), kLossyColor}};
    for (const auto& [bytes, color] : parts) {
      double w = bar_w * bytes / max_total;
      if (w <= 0) continue;
      s += "<rect x=\"" + Num(x) + "\" y=\"" + Num(y + 4) + "\" width=\"" + Num(std::max(w, 1.0)) +
           "\" height=\"22\" fill=\"" + color + "\"><title>" + HumanBytes(bytes) + "</title></rect>";
      x += w;
    }
    s += "<text x=\"" + Num(label_w + bar_w + 10) + "\" y=\"" + Num(y + 19) + "\">" +
         HumanBytes(double(r.f.logical_bytes)) + " &rarr; " + HumanBytes(double(r.f.stored_bytes)) + " (" +
         Ratio(r.f.logical_bytes, r.f.stored_bytes) + ")</text>";
    y += row_h;
  }
  return s + "</svg>";
}

std::string Legend() {
  std::string s = "<p class=\"legend\">";
  const std::pair<const char*, const char*> items[] = {{kStoredColor, "stored"},
                                                       {kDedupColor, "saved by dedup"},
                                                       {kLosslessColor, "saved by the lossless codec"},
                                                       {kLossyColor, "saved by lossy compression"}};
  for (const auto& [color, name] : items)
    s += "<span><i style=\"background:" + std::string(color) + "\"></i>" + name + "</span>";
  return s + "</p>";
}

std::string HistoryChart(const std::vector<json>& history) {
  std::vector<std::pair<double, double>> pts;  // logical, stored
  for (const auto& h : history) {
    if (!h.contains("totals") || !h["totals"].is_object()) continue;
    pts.emplace_back(h["totals"].value("logical_bytes", 0.0), h["totals"].value("stored_bytes", 0.0));
  }
  if (pts.empty()) return "<p class=\"muted\">No snapshots yet: one is recorded at each ingest and GC.</p>";
  const double w = 1000, h = 220, left = 90, right = 20, top = 12, bottom = 28;
  double max_v = 1;
  for (const auto& [l, st] : pts) max_v = std::max({max_v, l, st});
  auto px = [&](size_t i) {
    return pts.size() == 1 ? left + (w - left - right) / 2
                           : left + (w - left - right) * double(i) / double(pts.size() - 1);
  };
  auto py = [&](double v) { return top + (h - top - bottom) * (1 - v / max_v); };
  std::string s = "<svg class=\"chart\" role=\"img\" width=\"" + Num(w) + "\" height=\"" + Num(h) +
                  "\" viewBox=\"0 0 " + Num(w) + " " + Num(h) +
                  "\"><title>logical and stored bytes over time</title>";
  for (int g = 0; g <= 4; ++g) {
    double v = max_v * g / 4;
    s += "<line x1=\"" + Num(left) + "\" x2=\"" + Num(w - right) + "\" y1=\"" + Num(py(v)) + "\" y2=\"" +
         Num(py(v)) + "\" stroke=\"#d8dee9\"/>";
    s += "<text x=\"" + Num(left - 6) + "\" y=\"" + Num(py(v) + 4) + "\" text-anchor=\"end\">" +
         HumanBytes(v) + "</text>";
  }
  auto line = [&](int which, const char* color) {
    std::string pl;
    for (size_t i = 0; i < pts.size(); ++i) {
      double v = which == 0 ? pts[i].first : pts[i].second;
      pl += Num(px(i)) + "," + Num(py(v)) + " ";
      s += "<circle cx=\"" + Num(px(i)) + "\" cy=\"" + Num(py(v)) + "\" r=\"3\" fill=\"" + color + "\"/>";
    }
    s += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + std::string(color) + "\" points=\"" + pl +
         "\"/>";
  };
  line(0, kDedupColor);
  line(1, kStoredColor);
  std::string first = HtmlEscape(history.front().value("at", "")),
              last = HtmlEscape(history.back().value("at", ""));
  s += "<text x=\"" + Num(left) + "\" y=\"" + Num(h - 8) + "\">" + first + "</text>";
  s += "<text x=\"" + Num(w - right) + "\" y=\"" + Num(h - 8) + "\" text-anchor=\"end\">" + last + "</text>";
  s += "</svg><p class=\"legend\"><span><i style=\"background:" + std::string(kDedupColor) +
       "\"></i>logical (uploaded)</span><span><i style=\"background:" + kStoredColor +
       "\"></i>stored</span> &middot; " + std::to_string(pts.size()) + " snapshot(s)</p>";
  return s;
}

double Number(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return NAN;
  return j[key].get<double>();
}

std::string QualityCell(const json& q) {
  if (!q.is_object()) return "<td class=\"muted\">lossless</td>";
  std::string s = "<td>";
  double r = Number(q, "ratio"), we = Number(q, "weight_error"), oe = Number(q, "output_error");
  if (!std::isnan(r)) s += Fmt("ratio %.1f&times;", r);
  if (!std::isnan(we)) s += Fmt(", weight err %.4f", we);
  if (!std::isnan(oe)) s += Fmt(", output err %.4f", oe);
  return s + "</td>";
}

std::string Td(const std::string& s, bool num = false) {
  return std::string(num ? "<td class=\"n\">" : "<td>") + s + "</td>";
}

std::string SignedBytes(int64_t v) {
  return v < 0 ? "&minus;" + HumanBytes(double(-v)) : HumanBytes(double(v));
}

std::string FigureCells(const AuditFigures& f) {
  return Td(HumanBytes(double(f.logical_bytes)), true) + Td(HumanBytes(double(f.stored_bytes)), true) +
         Td(HumanBytes(double(f.saved_dedup_bytes)), true) + Td(SignedBytes(f.saved_lossless_bytes), true) +
         Td(SignedBytes(f.saved_lossy_bytes), true) + Td(Ratio(f.logical_bytes, f.stored_bytes), true);
}

const char kFigureHeads[] =
    "<th>logical</th><th>stored</th><th>dedup</th><th>lossless</th><th>lossy</th><th>reduction</th>";

const char kStyle[] = R"(<style>
body{font:14px/1.4 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:24px 32px;color:#2e3440;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dee9;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#7b8394}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d8dee9;border-radius:6px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:20px}.card span{color:#5e6779;font-size:12px}
svg.chart text{font-size:12px;fill:#2e3440}
.legend span{margin-right:16px;font-size:12px}.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;margin:4px 0 8px}th,td{padding:3px 10px;border-bottom:1px solid #eceff4;text-align:left;font-size:13px}
th{background:#f5f7fa}td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}
</style>)";

}  // namespace

std::string HtmlEscape(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (char c : in) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string HumanBytes(double n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (std::fabs(n) >= 1024 && u < 5) {
    n /= 1024;
    ++u;
  }
  return u == 0 ? Fmt("%.0f B", n) : Fmt("%.1f ", n) + units[u];
}

// Over 100 lines on purpose: the page's HTML in reading order, one section after the other.
std::string RenderUiPage(const AuditReport& report, const std::vector<json>& history) {
  const AuditFigures& t = report.total;
  std::string s =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>deltastore: storage "
      "audit</title>";
  s += kStyle;
  s += "</head><body><h1>deltastore storage audit</h1>";
  s += "<p class=\"muted\">" + std::to_string(report.models.size()) + " model(s), " +
       std::to_string(t.versions) + " version(s); chunk store " +
       HumanBytes(double(report.chunk_store_bytes)) + " in " + std::to_string(report.chunk_store_chunks) +
       " chunk(s); figures of " + HtmlEscape(report.generated_at) +
       ". JSON: <code>/v1/audit</code>, metrics: <code>/metrics</code>.</p>";

  s += "<div class=\"cards\">";
  auto card = [&](const std::string& value, const char* what) {
    s += "<div class=\"card\"><b>" + value + "</b><span>" + what + "</span></div>";
  };
  card(HumanBytes(double(t.logical_bytes)), "uploaded (logical)");
  card(HumanBytes(double(t.stored_bytes)), "stored");
  card(Ratio(t.logical_bytes, t.stored_bytes), "reduction");
  card(HumanBytes(double(t.saved_dedup_bytes)), "saved by dedup");
  card(SignedBytes(t.saved_lossless_bytes), "saved by the lossless codec");
  card(SignedBytes(t.saved_lossy_bytes), "saved by lossy compression");
  s += "</div>";

  // Savings per model, largest first.
  std::vector<std::pair<std::string, const AuditFigures*>> models;
  for (const auto& [name, f] : report.models) models.emplace_back(name, &f);
  std::stable_sort(models.begin(), models.end(), [](const auto& a, const auto& b) {
    return a.second->logical_bytes > b.second->logical_bytes;
  });
  s += "<h2>Savings per model</h2>";
  if (models.empty()) {
    s += "<p class=\"muted\">No versions yet.</p>";
  } else {
    std::vector<BarRow> rows;
    for (size_t i = 0; i < models.size() && i < kUiMaxModels; ++i)
      rows.push_back({HtmlEscape(models[i].first), *models[i].second});
    s += SavingsChart(rows, "savings per model") + Legend();
    if (models.size() > kUiMaxModels)
      s += "<p class=\"muted\">" + std::to_string(models.size() - kUiMaxModels) +
           " smaller model(s) not drawn.</p>";
    s += "<table><tr><th>model</th><th>versions</th>" + std::string(kFigureHeads) + "</tr>";
    for (const auto& [name, f] : models)
      s += "<tr>" + Td(HtmlEscape(name)) + Td(std::to_string(f->versions), true) + FigureCells(*f) + "</tr>";
    s += "</table>";
  }

  // Per base family.
  if (!report.families.empty()) {
    s += "<h2>Savings per base</h2><p class=\"muted\">A base version with every finetune stored against it "
         "(directly or through other finetunes).</p>";
    std::vector<BarRow> rows;
    for (const auto& [d, fam] : report.families) {
      if (rows.size() == kUiMaxModels) break;
      rows.push_back({HtmlEscape(fam.model) + "@" + ShortDigest(d), fam.figures});
    }
    s += SavingsChart(rows, "savings per base");
    s += "<table><tr><th>base</th><th>models</th><th>versions</th>" + std::string(kFigureHeads) + "</tr>";
    for (const auto& [d, fam] : report.families) {
      std::string names;
      for (const auto& m : fam.models) names += (names.empty() ? "" : ", ") + HtmlEscape(m);
      s += "<tr>" + Td(HtmlEscape(fam.model) + "@<code>" + ShortDigest(d) + "</code>") + Td(names) +
           Td(std::to_string(fam.figures.versions), true) + FigureCells(fam.figures) + "</tr>";
    }
    s += "</table>";
  }

  s += "<h2>Stored over time</h2>" + HistoryChart(history);

  // Lossy versions.
  std::vector<const AuditVersion*> lossy;
  for (const auto& v : report.versions)
    if (v.info.quality.is_object()) lossy.push_back(&v);
  s += "<h2>Quality of lossy versions</h2>";
  if (lossy.empty()) {
    s += "<p class=\"muted\">No lossy versions.</p>";
  } else {
    s += "<table><tr><th>version</th><th>target ratio</th><th>lossy tensors' ratio</th><th>whole version "
         "ratio</th>"
         "<th>weight error</th>"
         "<th>output error</th><th>lossy tensors</th><th>stored</th></tr>";
    for (const auto* v : lossy) {
      const json& q = v->info.quality;
      double target = q.contains("policy") && q["policy"].is_object() ? Number(q["policy"], "ratio") : NAN;
      auto cell = [](double x, const char* fmt) { return std::isnan(x) ? std::string("-") : Fmt(fmt, x); };
      s += "<tr>" + Td(HtmlEscape(v->info.model) + "@<code>" + ShortDigest(v->info.digest) + "</code>") +
           Td(cell(target, "%.1f&times;"), true) + Td(cell(Number(q, "lossy_ratio"), "%.2f&times;"), true) +
           Td(cell(Number(q, "ratio"), "%.2f&times;"), true) +
           Td(cell(Number(q, "weight_error"), "%.4f"), true) +
           Td(cell(Number(q, "output_error"), "%.4f"), true) +
           Td(cell(Number(q, "tensors_lossy"), "%.0f"), true) +
           Td(HumanBytes(double(v->figures.stored_bytes)), true) + "</tr>";
    }
    s += "</table><p class=\"muted\">Errors are relative: &#8214;reconstructed &minus; finetune&#8214; / "
         "&#8214;finetune &minus; base&#8214; over weights, and over layer outputs.</p>";
  }

  // Versions of each model.
  s += "<h2>Models and versions</h2>";
  std::map<std::string, std::vector<const AuditVersion*>> by_model;
  for (const auto& v : report.versions) by_model[v.info.model].push_back(&v);
  size_t shown_models = 0;
  for (const auto& [name, versions] : by_model) {
    if (shown_models++ == kUiMaxModels) {
      s += "<p class=\"muted\">More models: see <code>/v1/audit</code>.</p>";
      break;
    }
    s += "<h3>" + HtmlEscape(name) +
         "</h3><table><tr><th>version</th><th>tags</th><th>created</th><th>mode</th>"
         "<th>base</th>" +
         std::string(kFigureHeads) + "<th>quality</th></tr>";
    size_t first = versions.size() > kUiMaxVersionsPerModel ? versions.size() - kUiMaxVersionsPerModel : 0;
    for (size_t i = first; i < versions.size(); ++i) {
      const AuditVersion& v = *versions[i];
      std::string tags;
      for (const auto& tg : v.info.tags) tags += (tags.empty() ? "" : ", ") + HtmlEscape(tg);
      s += "<tr>" + Td("<code>" + ShortDigest(v.info.digest) + "</code>") + Td(tags.empty() ? "-" : tags) +
           Td(HtmlEscape(v.info.created_at)) + Td(HtmlEscape(v.info.mode)) +
           Td(v.base ? "<code>" + ShortDigest(*v.base) + "</code>" : "-") + FigureCells(v.figures) +
           QualityCell(v.info.quality) + "</tr>";
    }
    s += "</table>";
    if (first > 0)
      s += "<p class=\"muted\">" + std::to_string(first) + " older version(s): <code>/v1/audit/models/" +
           HtmlEscape(name) + "</code>.</p>";
  }
  s += "</body></html>\n";
  return s;
}

}  // namespace deltastore::api
