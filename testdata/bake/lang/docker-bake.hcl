# Language completeness: try/can (also over other targets' attributes), typed variables
# (CSV and NAME_JSON from the environment), buildx's newer standard functions, object
# forms of the structured attributes, and every target attribute --print shows.
variable "PLATFORMS" {
  type    = list(string)
  default = ["linux/amd64"]
}

variable "SETTINGS" {
  type        = object({ debug = bool, level = number })
  default     = { debug = false, level = 1 }
  description = "build settings"
}

variable "VERSION" {
  default = "v1.4.2"
}

variable "CONFIG" {
  default = {}
}

group "default" {
  targets = ["docs", "app"]
}

# Declared before "app": its only reference to it is inside try, which must still see it.
target "docs" {
  context = "docs"
  args = {
    FROM_APP = try(target.app.description, "none")
    MISSING  = try(target.app.args.NOPE, "none")
  }
}

target "_common" {
  description = "shared settings"
  labels = {
    "org.opencontainers.image.version" = trimprefix(VERSION, "v")
  }
}

target "app" {
  inherits    = ["_common"]
  description = "the application"
  dockerfile  = "app.Dockerfile"
  target      = "runtime"
  platforms   = PLATFORMS
  tags        = formatlist("registry.example/app:%s", setunion(["latest"], [trimprefix(VERSION, "v")]))
  annotations = ["index:org.opencontainers.image.title=app"]
  args = {
    DEBUG      = SETTINGS.debug
    LEVEL      = SETTINGS.level
    CHANNEL    = try(CONFIG.channel, "stable")
    HAS_MIRROR = can(CONFIG.mirror)
    MODERN     = semvercmp(VERSION, ">= 1.4, < 2")
    DIGEST     = md5("app")
    ID         = uuidv5("dns", "app.example")
    LATER      = timeadd("2024-01-01T00:00:00Z", "36h")
    SUBNET     = cidrsubnet("10.0.0.0/16", 8, 3)
    QUERY      = urlencode("a b&c")
    SAFE       = sanitize("feature/x-1.2")
    UNSET      = null
  }
  output          = [{ type = "image", name = "registry.example/app", push = false }, "type=local,dest=out"]
  cache-from      = [{ type = "registry", ref = "registry.example/app:cache" }, "user/app:cache"]
  cache-to        = [{ type = "inline" }]
  attest          = [{ type = "provenance", mode = "max" }, "type=sbom,disabled=true"]
  secret          = ["type=env,id=gh,src=GH_TOKEN", { id = "npmrc", src = "npmrc.txt" }]
  ssh             = [{ id = "default" }, { id = "key", paths = ["a.pem", "b.pem"] }]
  pull            = true
  no-cache        = false
  network         = "host"
  no-cache-filter = ["build"]
  shm-size        = "128m"
  ulimits         = ["nofile=1024:2048"]
  call            = "build"
  entitlements    = ["security.insecure"]
  extra-hosts     = { "db.local" = "10.0.0.2" }
}
