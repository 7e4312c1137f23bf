; Struct members with their types: `struct perf_event { struct pmu *pmu; ... }`, so a field call like
; `event->pmu->read(event)` knows `read` belongs to `struct pmu`, not to every struct with a `read` member.
(struct_specifier name: (type_identifier) @struct body: (field_declaration_list
  (field_declaration type: (_) @type declarator: [
    (field_identifier) @field
    (pointer_declarator declarator: (field_identifier) @field)
    (pointer_declarator declarator: (pointer_declarator declarator: (field_identifier) @field))
    (array_declarator declarator: (field_identifier) @field)
  ])))
