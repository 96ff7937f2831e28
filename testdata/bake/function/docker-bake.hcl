# User functions (params, variadic_params, result) calling each other and the standard library.
variable "REPO" {
  default = "registry.example/tools"
}

function "tag" {
  params = [name, version]
  result = "${REPO}/${lower(name)}:${trimprefix(version, "v")}"
}

function "tags" {
  params          = [name]
  variadic_params = versions
  result          = [for v in versions : tag(name, v)]
}

target "default" {
  tags = tags("Linter", "v1.2.3", "v1", "latest")
  args = {
    STAMP    = formatdate("YYYYMMDD", "2024-03-05T07:08:09Z")
    SAFE     = regex_replace("feature/x.y", "[^a-z0-9]+", "-")
    PARTS    = join("+", split(".", "1.2.3"))
    FALLBACK = coalesce("", "fallback")
    SAME     = and(equal(1, 1), notequal("a", "b"))
  }
}
