// What a route needs and what a bearer token grants. Scopes nest: admin includes write, write
// includes read. Below the router (api/) and the token store (service/), which both use it.
#pragma once

namespace deltastore {

enum class Scope { kNone = 0, kRead = 1, kWrite = 2, kAdmin = 3 };

}  // namespace deltastore
