; QOM TypeInfo initializers, single and in arrays (DEFINE_TYPES).
(declaration type: (type_identifier) @type declarator: (init_declarator
  declarator: (_) @var value: (initializer_list) @list) (#eq? @type "TypeInfo"))
