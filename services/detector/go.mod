module github.com/rehome/rehome/services/detector

go 1.26.0

require github.com/rehome/rehome/shared v0.0.0

replace github.com/rehome/rehome/shared => ../../shared
